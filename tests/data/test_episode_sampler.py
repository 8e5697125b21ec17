from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from fewshot_metric.data import EpisodeSampler, split_episode

# 4 classes: 4, 4, 4 and 5 images, interleaved so that index order differs from class order
LABELS = np.array([0, 1, 2, 3] * 4 + [3])


def test_episode_layout_counts_and_disjointness():
    sampler = EpisodeSampler(LABELS, n_way=3, k_shot=1, n_query=2, n_episodes=20, seed=3)
    for indices in sampler:
        assert len(indices) == 3 * (1 + 2) and len(set(indices)) == 9
        support, query = indices[:3], indices[3:]
        support_classes = LABELS[support]
        assert len(set(support_classes.tolist())) == 3
        # query block is class-major in the same class order as the support block
        assert LABELS[query].tolist() == np.repeat(support_classes, 2).tolist()
        assert not set(support) & set(query)


def test_all_classes_and_images_used_when_n_way_and_shots_need_everything():
    sampler = EpisodeSampler(LABELS[:16], n_way=4, k_shot=2, n_query=2, n_episodes=5)
    for indices in sampler:
        assert sorted(indices) == list(range(16))
        assert LABELS[indices[:8]].tolist()[::2] == LABELS[indices[:8]].tolist()[1::2]


def test_seed_reproducibility_and_start_offset():
    def episodes(seed, start=0):
        return list(EpisodeSampler(LABELS, 2, 1, 1, n_episodes=10, seed=seed, start=start))

    assert episodes(7) == episodes(7)
    assert episodes(7) != episodes(8)
    assert episodes(7, start=4) == episodes(7)[4:]
    sampler = EpisodeSampler(LABELS, 2, 1, 1, n_episodes=10, seed=7, start=4)
    assert len(sampler) == 6 and sampler.episode(2) == episodes(7)[2]


def test_usable_as_batch_sampler_with_split_episode():
    data = TensorDataset(torch.arange(len(LABELS)).float()[:, None], torch.as_tensor(LABELS))
    sampler = EpisodeSampler(LABELS, n_way=2, k_shot=2, n_query=1, n_episodes=3, seed=1)
    batches = list(DataLoader(data, batch_sampler=sampler))
    assert len(batches) == 3
    for (x, y), indices in zip(batches, sampler, strict=True):
        assert x[:, 0].long().tolist() == indices
        support, support_labels, query, query_labels = split_episode(x, 2, 2, 1)
        assert support.shape == (4, 1) and query.shape == (2, 1)
        assert support_labels.tolist() == [0, 0, 1, 1] and query_labels.tolist() == [0, 1]
        assert y[:4].tolist()[::2] == y[:4].tolist()[1::2] and y[4:].tolist() == y[:4:2].tolist()


def test_split_episode_by_hand_and_wrong_size():
    batch = torch.arange(9).reshape(9, 1)
    support, support_labels, query, query_labels = split_episode(batch, 3, 2, 1)
    assert support[:, 0].tolist() == [0, 1, 2, 3, 4, 5]
    assert query[:, 0].tolist() == [6, 7, 8]
    assert support_labels.tolist() == [0, 0, 1, 1, 2, 2] and query_labels.tolist() == [0, 1, 2]
    assert support_labels.dtype == torch.int64
    with pytest.raises(ValueError, match="batch has 9 items, expected .* = 12"):
        split_episode(batch, 3, 2, 2)


def test_same_group_draws_every_class_from_one_eligible_group():
    groups = ["a", "a", "b", "b", "b", "c"]
    labels = np.repeat(np.arange(6), 3)
    only_b = EpisodeSampler(labels, 3, 1, 1, 10, class_groups=groups, same_group=True)
    for indices in only_b:
        assert sorted(set(labels[indices].tolist())) == [2, 3, 4]
    pairs = EpisodeSampler(labels, 2, 1, 1, 40, class_groups=groups, same_group=True)
    seen = set()
    for indices in pairs:
        episode_groups = {groups[c] for c in labels[indices]}
        assert len(episode_groups) == 1
        seen |= episode_groups
    assert seen == {"a", "b"}  # "c" has a single class: never eligible for 2-way


def test_class_with_too_few_images_is_named_with_counts():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3])
    names = ["alpha", "beta", "gamma", "delta"]
    with pytest.raises(ValueError) as info:
        EpisodeSampler(labels, 2, 1, 2, 5, class_names=names)
    message = str(info.value)
    assert "2 of 4 classes" in message and "1 + 2 = 3 images" in message
    assert "'beta' has 2" in message and "'delta' has 1" in message
    assert "alpha" not in message
    with pytest.raises(ValueError, match="label 3 has 1"):
        EpisodeSampler(labels, 2, 1, 2, 5)
    with pytest.raises(ValueError, match=r"label 19 has 1, \.\.\. \(5 more\)"):
        EpisodeSampler(np.arange(25), 2, 1, 1, 5)


def test_too_few_classes_and_no_eligible_group():
    labels = np.repeat(np.arange(4), 2)
    with pytest.raises(ValueError, match="n_way=5 but the data has only 4 classes"):
        EpisodeSampler(labels, 5, 1, 1, 1)
    with pytest.raises(ValueError, match=r"no group has n_way=3 classes .*'x': 2, 'y': 2"):
        EpisodeSampler(labels, 3, 1, 1, 1, class_groups=["x", "y", "x", "y"], same_group=True)
    with pytest.raises(ValueError, match="same_group=True needs class_groups"):
        EpisodeSampler(labels, 2, 1, 1, 1, same_group=True)


@pytest.mark.parametrize("name", ["n_way", "k_shot", "n_query", "n_episodes"])
def test_non_positive_sizes_are_named(name):
    sizes = {"n_way": 2, "k_shot": 1, "n_query": 1, "n_episodes": 3, name: 0}
    with pytest.raises(ValueError, match=f"{name} must be positive, got 0"):
        EpisodeSampler(LABELS, **sizes)


def test_bad_start_or_seed():
    with pytest.raises(ValueError, match="start=4, n_episodes=3"):
        EpisodeSampler(LABELS, 2, 1, 1, 3, start=4)
    with pytest.raises(ValueError, match="seed >= 0 \\(got -1\\)"):
        EpisodeSampler(LABELS, 2, 1, 1, 3, seed=-1)
