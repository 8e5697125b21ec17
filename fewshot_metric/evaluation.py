"""Episodic evaluation: mean accuracy over N-way K-shot tasks with a 95% confidence interval."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from fewshot_metric.data import EpisodeSampler, FewShotDataset, split_episode
from fewshot_metric.meta.finetune import FineTune
from fewshot_metric.model import FewShotModel
from fewshot_metric.training.splits import preload_images


@dataclass(frozen=True)
class EpisodeAccuracy:
    """Mean accuracy over `episodes` tasks; ci95 = 1.96 * std / sqrt(episodes)."""

    mean: float
    ci95: float
    std: float
    episodes: int
    n_way: int
    k_shot: int
    n_query: int
    seed: int
    same_group: bool

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        task = f"{self.n_way}-way {self.k_shot}-shot"
        if self.same_group:
            task += " within-group"
        return (f"{task}: {100 * self.mean:.2f}% ± {100 * self.ci95:.2f}% "
                f"(95% CI, {self.episodes} episodes, {self.n_query} queries/class, "
                f"seed {self.seed})")


def accuracy_with_ci(accuracies: Sequence[float]) -> tuple[float, float, float]:
    """Per-episode accuracies -> (mean, 1.96 * std / sqrt(E), std) with the population std."""
    values = np.asarray(accuracies, dtype=np.float64)
    std = float(values.std())
    return float(values.mean()), 1.96 * std / math.sqrt(len(values)), std


@torch.no_grad()
def embed_images(model: FewShotModel, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """images [N, C, H, W] -> embeddings [N, D] on the model's device, backbone in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    chunks = [model.embed(images[i:i + batch_size].to(device))
              for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return torch.cat(chunks)


def embed_dataset(model: FewShotModel, dataset: FewShotDataset,
                  batch_size: int = 256) -> torch.Tensor:
    """Every image of `dataset`, preprocessed batch by batch -> embeddings [N, D]."""
    chunks = []
    for start in range(0, len(dataset), batch_size):
        indices = range(start, min(start + batch_size, len(dataset)))
        chunks.append(embed_images(model, preload_images(dataset, indices), batch_size))
    return torch.cat(chunks)


def _evaluate(model: FewShotModel, score: Callable[[list[int]], tuple[torch.Tensor,
                                                                        torch.Tensor]],
              labels: np.ndarray, class_groups: Sequence[str] | None, n_way: int, k_shot: int,
              n_query: int, episodes: int, seed: int, same_group: bool) -> EpisodeAccuracy:
    """Accuracy over `episodes` tasks, the model in eval mode; score(episode indices) ->
    (query logits [n_way * n_query, n_way], query labels [n_way * n_query])."""
    sampler = EpisodeSampler(labels, n_way=n_way, k_shot=k_shot, n_query=n_query,
                             n_episodes=episodes, seed=seed, class_groups=class_groups,
                             same_group=same_group)
    was_training = model.training
    model.eval()
    accuracies = []
    for indices in sampler:
        logits, query_labels = score(indices)
        accuracies.append((logits.argmax(1) == query_labels).float().mean().item())
    model.train(was_training)
    mean, ci95, std = accuracy_with_ci(accuracies)
    return EpisodeAccuracy(mean, ci95, std, episodes, n_way, k_shot, n_query, seed, same_group)


@torch.no_grad()
def evaluate_embeddings(model: FewShotModel, embeddings: torch.Tensor, labels: np.ndarray,
                        class_groups: Sequence[str] | None, n_way: int, k_shot: int,
                        n_query: int, episodes: int, seed: int, same_group: bool = False,
                        finetune: FineTune | None = None) -> EpisodeAccuracy:
    """Runs `episodes` tasks on precomputed embeddings [N, D] with the model's head, or with
    a linear head fine-tuned on each support set (`finetune`, what="head").

    Episode i is a pure function of (seed, i), so the same seed gives the same tasks and
    the same number. Each image is embedded once (eval mode), then tasks index into it.
    """
    if finetune is not None and finetune.what != "head":
        raise ValueError("fine-tuning the whole network needs the images: use "
                         "evaluate_images or evaluate_dataset")

    def score(indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        emb = embeddings[torch.as_tensor(indices)]
        support, support_labels, query, query_labels = split_episode(emb, n_way, k_shot, n_query)
        if finetune is not None:
            return finetune.head_logits(support, support_labels, query), query_labels
        return model.episode_logits(support, support_labels, query), query_labels

    return _evaluate(model, score, labels, class_groups, n_way, k_shot, n_query, episodes, seed,
                     same_group)


@torch.no_grad()
def evaluate_images(model: FewShotModel, fetch: Callable[[list[int]], torch.Tensor],
                    labels: np.ndarray, class_groups: Sequence[str] | None, n_way: int,
                    k_shot: int, n_query: int, episodes: int, seed: int,
                    same_group: bool = False, finetune: FineTune | None = None
                    ) -> EpisodeAccuracy:
    """Runs the same seeded tasks as `evaluate_embeddings` on images: fetch(indices [n]) ->
    images [n, C, H, W]; each episode goes through the head's `episode_loss` in eval mode
    (heads that adapt: the test-time inner loop on its support set), or through
    `finetune.network_logits` (the backbone and a linear head fine-tuned on it)."""
    device = next(model.parameters()).device

    def score(indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        images = fetch(indices).to(device)
        support, support_labels, query, query_labels = split_episode(images, n_way, k_shot,
                                                                     n_query)
        if finetune is not None:
            return (finetune.network_logits(model.backbone, support, support_labels, query),
                    query_labels)
        return model.episode_loss(images, n_way, k_shot, n_query)[1], query_labels

    return _evaluate(model, score, labels, class_groups, n_way, k_shot, n_query, episodes, seed,
                     same_group)


def evaluate_dataset(model: FewShotModel, dataset: FewShotDataset, n_way: int, k_shot: int,
                     n_query: int, episodes: int, seed: int, same_group: bool = False,
                     batch_size: int = 256,
                     fetch: Callable[[np.ndarray], torch.Tensor] | None = None,
                     finetune: FineTune | None = None) -> EpisodeAccuracy:
    """The model's accuracy on `dataset`'s seeded tasks. Metric heads: every image embedded
    once, then `evaluate_embeddings`; heads that adapt per task (`scores_images`) and
    whole-network fine-tuning (`finetune.what == "all"`): `evaluate_images`.
    fetch(indices [n]) -> images [n, C, H, W] (default: preprocess them from `dataset`,
    batch by batch or episode by episode). `finetune`: test-time fine-tuning (not for heads
    that adapt on their own)."""
    if finetune is not None:
        finetune.check_head(model.head)
    if model.head.scores_images or (finetune is not None and finetune.what == "all"):
        fetch = fetch or (lambda indices: preload_images(dataset, indices, progress=False))
        return evaluate_images(model, fetch, dataset.labels, dataset.class_groups, n_way,
                               k_shot, n_query, episodes, seed, same_group, finetune)
    embeddings = (embed_dataset(model, dataset, batch_size) if fetch is None
                  else embed_images(model, fetch(np.arange(len(dataset))), batch_size))
    return evaluate_embeddings(model, embeddings, dataset.labels, dataset.class_groups, n_way,
                               k_shot, n_query, episodes, seed, same_group, finetune)
