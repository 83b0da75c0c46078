"""Cross-attention from frame queries to the instance context (the release's `ca2`, a BERT cross layer).

Paper Fig. 2(b): the first cross-attention block of SDB_k, CA(SA(Q_{k-1}), C_{k-1}). The release builds it as a
BERT layer: attention (query/key/value, 8 heads, scale 1/sqrt(head dim), dropout on the probabilities) -> dense ->
dropout -> LayerNorm(+query); then an erf-GELU intermediate -> dense -> dropout -> LayerNorm(+attention output).
LayerNorms use eps 1e-12. The context tokens carry no position embedding.

Every frame query of a video attends to the same context tokens, so the T queries of a video form one query
sequence (equivalent to the release's per-frame batching with an expanded context, without the copies). Context
of several videos is padded to a common length with a mask; a video without context keeps its queries unchanged,
as the release skips the block when nothing was selected.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ContextCrossAttention(nn.Module):
    def __init__(self, d_model: int, heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.dropout_p = dropout
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.attn_out = nn.Linear(d_model, d_model)
        self.attn_norm = nn.LayerNorm(d_model, eps=1e-12)
        self.ffn_in = nn.Linear(d_model, ffn_dim)
        self.ffn_out = nn.Linear(ffn_dim, d_model)
        self.ffn_norm = nn.LayerNorm(d_model, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def _split(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, queries: Tensor, context: Tensor, context_pad: Tensor) -> Tensor:
        """
        Args:
            queries: (B, T, d) frame queries.
            context: (B, S, d) context tokens.
            context_pad: (B, S) bool, True = not a context token of that video.
        Returns:
            (B, T, d); rows of videos with no context token are `queries` unchanged.
        """
        has_context = ~context_pad.all(dim=1)  # (B,)
        # A video without context gets an all-visible mask so that the softmax stays finite; its result is
        # discarded below (keeping gradients free of NaN).
        visible = ~context_pad | ~has_context[:, None]
        b, t, d = queries.shape
        q, k, v = self._split(self.query(queries)), self._split(self.key(context)), self._split(self.value(context))
        attn = F.scaled_dot_product_attention(
            q, k, v, attn_mask=visible[:, None, None, :], dropout_p=self.dropout_p if self.training else 0.0
        )
        attn = attn.transpose(1, 2).reshape(b, t, d)
        hidden = self.attn_norm(self.dropout(self.attn_out(attn)) + queries)
        out = self.ffn_norm(self.dropout(self.ffn_out(F.gelu(self.ffn_in(hidden)))) + hidden)
        return torch.where(has_context[:, None, None], out, queries)
