"""Matching networks (Vinyals et al. 2016): attention over the support set, optionally with
full context embeddings (FCE)."""

from __future__ import annotations

import functools

import torch
from torch import nn

from fewshot_metric.distances import Cosine, Distance
from fewshot_metric.heads import EpisodeHead


class MatchingHead(EpisodeHead):
    """a[q, j] = softmax_j(distance.logits(f(q), g(s_j))), P(k | q) = sum of a[q, j] over the
    supports j of class k; logits [Q, n_way] = log P(k | q), so cross-entropy on the logits is
    the negative log-likelihood of P. The default distance is the paper's plain cosine
    (Cosine with scale 1).

    Without FCE, f and g are the identity. With `fce=True` (the paper's appendix), for
    embeddings of width D = `embed_dim`:
      g(s_i) = s_i + fw_i + bw_i, fw/bw: a bidirectional LSTM (`lstm_layers`, hidden D) run
        over the support sequence;
      f(q) = h_K after K = `process_steps` steps, from h_0 = c_0 = 0, of
        r = sum_i softmax_i(h . g(s_i)) g(s_i);  h', c = LSTM([q; r], (h, c));  h = h' + q.
    Feeding r as input equals the paper's LSTM(q, [h, r], c): the gates are linear in both.
    `lstm_layers`, `process_steps` and `embed_dim` are used only with `fce=True`.
    """

    default_distance = functools.partial(Cosine, scale=1.0)

    def __init__(self, distance: Distance | None = None, fce: bool = False,
                 lstm_layers: int = 1, process_steps: int = 4, embed_dim: int | None = None):
        super().__init__(distance)
        self.fce = bool(fce)
        self.process_steps = process_steps
        self.embed_dim = embed_dim
        if self.fce:
            for option, value in (("embed_dim", embed_dim), ("lstm_layers", lstm_layers),
                                  ("process_steps", process_steps)):
                if not (isinstance(value, int) and value >= 1):
                    raise ValueError(f"MatchingHead(fce=True) needs {option} as a positive "
                                     "integer (embed_dim: the embedding width D, which sizes "
                                     f"the LSTMs); got {value!r}")
            self.support_lstm = nn.LSTM(embed_dim, embed_dim, num_layers=lstm_layers,
                                        bidirectional=True, batch_first=True)
            self.query_cell = nn.LSTMCell(2 * embed_dim, embed_dim)

    def embed_support(self, support_emb: torch.Tensor) -> torch.Tensor:
        """FCE g: support_emb [S, D] -> [S, D] (identity without FCE)."""
        if not self.fce:
            return support_emb
        both, _ = self.support_lstm(support_emb.unsqueeze(0))  # [1, S, 2D]
        fw, bw = both[0].split(self.embed_dim, dim=1)
        return support_emb + fw + bw

    def embed_query(self, query_emb: torch.Tensor, support_ctx: torch.Tensor) -> torch.Tensor:
        """FCE f: query_emb [Q, D], g(support) [S, D] -> [Q, D] (identity without FCE)."""
        if not self.fce:
            return query_emb
        hidden = torch.zeros_like(query_emb)
        cell = torch.zeros_like(query_emb)
        for _ in range(self.process_steps):
            read = torch.softmax(hidden @ support_ctx.T, dim=1) @ support_ctx  # [Q, D]
            hidden, cell = self.query_cell(torch.cat([query_emb, read], dim=1), (hidden, cell))
            hidden = hidden + query_emb
        return hidden

    def episode_logits(self, support_emb: torch.Tensor, support_labels: torch.Tensor,
                       query_emb: torch.Tensor) -> torch.Tensor:
        """support_emb [S, D], support_labels [S], query_emb [Q, D] -> log P [Q, n_way]."""
        members = self.class_mask(support_emb, support_labels)  # [S, n_way]
        widths = {support_emb.shape[1], query_emb.shape[-1]}
        if self.fce and widths != {self.embed_dim}:
            raise ValueError(f"MatchingHead was built with embed_dim={self.embed_dim} for its "
                             f"FCE LSTMs but got embeddings of width {sorted(widths)}; build "
                             "it with embed_dim equal to the backbone's embedding width")
        support_ctx = self.embed_support(support_emb)
        scores = self.distance.logits(self.embed_query(query_emb, support_ctx), support_ctx)
        log_attention = torch.log_softmax(scores, dim=1)  # [Q, S]
        per_class = log_attention.unsqueeze(2).masked_fill(~members, float("-inf"))
        return per_class.logsumexp(1)
