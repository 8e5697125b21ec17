"""MatchingHead: attention probabilities worked by hand, and the FCE LSTMs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fewshot_metric.heads import MatchingHead, build_head

SUPPORT = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
LABELS = torch.tensor([0, 1, 1])
QUERY = torch.tensor([[1.0, 0.0], [0.0, 2.0]])


def test_probabilities_by_hand():
    e = math.e
    # query (1,0): cosines to the supports 1, 0, -1 -> attention e, 1, 1/e over Z = e + 1 + 1/e
    #   P(0) = e / Z = 0.66524, P(1) = (1 + 1/e) / Z = 0.33476
    # query (0,2): cosines 0, 1, 0 -> attention 1, e, 1 over 2 + e
    #   P(0) = 1 / (2 + e) = 0.21194, P(1) = (1 + e) / (2 + e) = 0.78806
    z = e + 1 + 1 / e
    probs = torch.tensor([[e / z, (1 + 1 / e) / z], [1 / (2 + e), (1 + e) / (2 + e)]])
    torch.testing.assert_close(probs, torch.tensor([[0.66524, 0.33476], [0.21194, 0.78806]]),
                               atol=1e-5, rtol=0)
    logits = MatchingHead()(SUPPORT, LABELS, QUERY)
    torch.testing.assert_close(logits, probs.log())
    # The logits are log-probabilities, so cross-entropy is the NLL of the matching probabilities:
    # labels (0, 1) -> -(log 0.66524 + log 0.78806) / 2
    loss = F.cross_entropy(logits, torch.tensor([0, 1]))
    torch.testing.assert_close(loss, -(probs[0, 0].log() + probs[1, 1].log()) / 2)


def _episode(seed: int, n_way: int = 5, k_shot: int = 2, n_query: int = 7, dim: int = 6):
    gen = torch.Generator().manual_seed(seed)
    support = torch.randn(n_way * k_shot, dim, generator=gen)
    labels = torch.arange(n_way).repeat_interleave(k_shot)
    query = torch.randn(n_query, dim, generator=gen)
    return support, labels, query, torch.randint(n_way, (n_query,), generator=gen)


def test_fce_gives_log_probabilities_and_is_equivariant_in_query_order():
    torch.manual_seed(0)
    head = build_head("matching", fce=True, embed_dim=6, process_steps=3, lstm_layers=2)
    support, labels, query, _ = _episode(1)
    logits = head(support, labels, query)
    assert logits.shape == (7, 5)
    torch.testing.assert_close(logits.logsumexp(1), torch.zeros(7))
    perm = torch.tensor([3, 0, 6, 1, 5, 2, 4])
    torch.testing.assert_close(head(support, labels, query[perm]), logits[perm])


def test_fce_gradients_reach_both_lstms():
    torch.manual_seed(0)
    head = MatchingHead(fce=True, embed_dim=6)
    support, labels, query, query_labels = _episode(2)
    F.cross_entropy(head(support, labels, query), query_labels).backward()
    lstm_params = dict(head.support_lstm.named_parameters()) | {
        f"cell.{n}": p for n, p in head.query_cell.named_parameters()}
    assert len(lstm_params) == 12  # 2 directions x 4 + 4
    for name, param in lstm_params.items():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_fce_with_zero_lstm_weights_is_plain_matching():
    # All-zero weights: gates are sigmoid(0) = 1/2 and the cell input tanh(0) = 0, so c = 0 and
    # every LSTM output is 0; the skip connections leave g(s) = s and f(q) = q.
    head = MatchingHead(fce=True, embed_dim=2)
    with torch.no_grad():
        for param in head.parameters():
            param.zero_()
    torch.testing.assert_close(head(SUPPORT, LABELS, QUERY), MatchingHead()(SUPPORT, LABELS, QUERY))


def test_fce_option_errors():
    with pytest.raises(ValueError, match="needs embed_dim"):
        MatchingHead(fce=True)
    with pytest.raises(ValueError, match="process_steps"):
        MatchingHead(fce=True, embed_dim=4, process_steps=0)
    with pytest.raises(ValueError, match=r"embed_dim=4 .* width \[2\]"):
        MatchingHead(fce=True, embed_dim=4)(SUPPORT, LABELS, QUERY)
    with pytest.raises(ValueError, match=r"unknown options \['steps'\]; valid options are"):
        build_head("matching", steps=3)
