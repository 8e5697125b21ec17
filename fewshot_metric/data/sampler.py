"""EpisodeSampler: N-way K-shot episodes as lists of dataset indices, and `split_episode`.

An episode's indices are the support block (n_way * k_shot, class-major: class 0's shots,
then class 1's, ...) followed by the query block (n_way * n_query, class-major). Episode i
depends only on (seed, i) and the labels, so a run resumed at step s draws the same episodes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

MAX_LISTED = 20  # classes named in an error message before "... (N more)"


class EpisodeSampler:
    """Yields `n_episodes` episodes (from `start`) of n_way * (k_shot + n_query) indices into
    `labels` [N]; usable as a DataLoader `batch_sampler`.

    Classes are the distinct values in `labels`; `class_names` and `class_groups` (indexed by
    label) name them in errors and group them: `same_group=True` draws all classes of an
    episode from one group with at least n_way classes. Every problem is reported here, in the
    constructor, not in the middle of training.
    """

    def __init__(
        self,
        labels: np.ndarray | Sequence[int],
        n_way: int,
        k_shot: int,
        n_query: int,
        n_episodes: int,
        seed: int = 0,
        class_groups: Sequence[str] | None = None,
        same_group: bool = False,
        start: int = 0,
        class_names: Sequence[str] | None = None,
    ):
        for name, value in (("n_way", n_way), ("k_shot", k_shot), ("n_query", n_query),
                            ("n_episodes", n_episodes)):
            if value < 1:
                raise ValueError(f"EpisodeSampler: {name} must be positive, got {value}")
        if seed < 0 or not 0 <= start <= n_episodes:
            raise ValueError(
                f"EpisodeSampler: need seed >= 0 (got {seed}) and 0 <= start <= n_episodes "
                f"(got start={start}, n_episodes={n_episodes})"
            )
        labels = np.asarray(labels, dtype=np.int64)
        self.n_way, self.k_shot, self.n_query = n_way, k_shot, n_query
        self.n_episodes, self.seed, self.start = n_episodes, seed, start
        self.same_group = same_group
        self.classes, counts = np.unique(labels, return_counts=True)
        order = np.argsort(labels, kind="stable")
        self.indices = dict(zip(self.classes.tolist(), np.split(order, np.cumsum(counts)[:-1]),
                                strict=True))

        def describe(c: int) -> str:
            return f"'{class_names[c]}'" if class_names is not None else f"label {c}"

        need = k_shot + n_query
        small = [c for c in self.classes if len(self.indices[int(c)]) < need]
        if small:
            listed = ", ".join(f"{describe(c)} has {len(self.indices[int(c)])}"
                               for c in small[:MAX_LISTED])
            if len(small) > MAX_LISTED:
                listed += f", ... ({len(small) - MAX_LISTED} more)"
            raise ValueError(
                f"EpisodeSampler: {len(small)} of {len(self.classes)} classes have fewer than "
                f"k_shot + n_query = {k_shot} + {n_query} = {need} images: {listed}; lower "
                "k_shot/n_query or remove those classes"
            )
        if len(self.classes) < n_way:
            raise ValueError(
                f"EpisodeSampler: n_way={n_way} but the data has only {len(self.classes)} "
                "classes; lower n_way or use a larger split"
            )
        self.groups: list[np.ndarray] = []
        if same_group:
            if class_groups is None:
                raise ValueError("EpisodeSampler: same_group=True needs class_groups")
            members: dict[str, list[int]] = {}
            for c in self.classes:
                members.setdefault(class_groups[c], []).append(int(c))
            self.groups = [np.asarray(m) for _, m in sorted(members.items()) if len(m) >= n_way]
            if not self.groups:
                sizes = ", ".join(f"'{g}': {len(m)}" for g, m in sorted(members.items()))
                raise ValueError(
                    f"EpisodeSampler: same_group=True but no group has n_way={n_way} classes "
                    f"(classes per group: {sizes}); lower n_way or turn same_group off"
                )

    def episode(self, i: int) -> list[int]:
        """Indices of episode i: support block then query block, both class-major."""
        rng = np.random.default_rng([self.seed, i])
        pool = self.groups[rng.integers(len(self.groups))] if self.same_group else self.classes
        chosen = rng.choice(pool, size=self.n_way, replace=False)
        draws = [rng.choice(self.indices[int(c)], size=self.k_shot + self.n_query, replace=False)
                 for c in chosen]
        support = [int(j) for d in draws for j in d[: self.k_shot]]
        query = [int(j) for d in draws for j in d[self.k_shot:]]
        return support + query

    def __iter__(self) -> Iterator[list[int]]:
        for i in range(self.start, self.n_episodes):
            yield self.episode(i)

    def __len__(self) -> int:
        return self.n_episodes - self.start


def split_episode(
    batch: torch.Tensor, n_way: int, k_shot: int, n_query: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """batch [n_way * (k_shot + n_query), ...] in episode layout -> support [n_way * k_shot, ...],
    support_labels [n_way * k_shot], query [n_way * n_query, ...], query_labels [n_way * n_query];
    labels are 0..n_way-1 (int64, on batch's device)."""
    n_support = n_way * k_shot
    expected = n_support + n_way * n_query
    if batch.shape[0] != expected:
        raise ValueError(
            f"split_episode: batch has {batch.shape[0]} items, expected n_way * (k_shot + "
            f"n_query) = {n_way} * ({k_shot} + {n_query}) = {expected}"
        )
    classes = torch.arange(n_way, device=batch.device)
    return (batch[:n_support], classes.repeat_interleave(k_shot),
            batch[n_support:], classes.repeat_interleave(n_query))
