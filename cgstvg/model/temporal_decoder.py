"""Temporal-decoding blocks (TDB, paper Fig. 2(c)): one temporal query per frame.

Per layer (post-norm, as the release): self-attention over the T frame queries of a video with q = k = query +
time sine (padded frames masked as keys); cross-attention of each frame query to its own frame's encoder tokens
(key = memory + decoder position, value = memory, padded tokens masked); ReLU FFN. With `context_in_temporal`
(paper Table 7) a context cross-attention block follows the self-attention, as in the spatial blocks. All layers
share one final LayerNorm, applied to every layer's output before the temporal heads.

`TemporalDecoder.stage(k, ...)` runs layer k and the shared norm; the head applies its start/end and actioness
heads to the normed output of every stage.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from cgstvg.model.config import CGSTVGConfig
from cgstvg.model.context_attention import ContextCrossAttention
from cgstvg.model.memory import DecoderMemory


class TemporalDecoderLayer(nn.Module):
    def __init__(
        self, d_model: int, heads: int, ffn_dim: int, dropout: float, context_attn: ContextCrossAttention | None
    ):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.context_attn = context_attn
        self.linear1 = nn.Linear(d_model, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(
        self,
        tgt: Tensor,
        time_pos: Tensor,
        time_mask: Tensor,
        memory: Tensor,
        memory_key: Tensor,
        memory_mask: Tensor,
        context: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """
        Args:
            tgt: (B, T, d) temporal queries.
            time_pos: (T, d) sine table rows.
            time_mask: (B, T) True = padded frame.
            memory: (B*T, S, d) encoder output per frame (the values).
            memory_key: (B*T, S, d) memory + decoder position (the keys; computed once for all layers).
            memory_mask: (B*T, S) True = padded token.
            context: optional (tokens (B, S_c, d), pad (B, S_c)) for the context cross-attention.
        Returns:
            (B, T, d), before the shared final norm.
        """
        b, t, d = tgt.shape
        qk = tgt + time_pos
        attn = self.self_attn(qk, qk, tgt, key_padding_mask=time_mask, need_weights=False)[0]
        tgt = self.norm1(tgt + self.dropout1(attn))
        if context is not None and self.context_attn is not None:
            tgt = self.context_attn(tgt, *context)
        query = tgt.reshape(b * t, 1, d)
        attn = self.cross_attn(query, memory_key, memory, key_padding_mask=memory_mask, need_weights=False)[0]
        tgt = self.norm2(tgt + self.dropout2(attn.view(b, t, d)))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(ffn))


class TemporalDecoder(nn.Module):
    """The stack of TDB layers and their shared final LayerNorm."""

    def __init__(self, cfg: CGSTVGConfig):
        super().__init__()
        d = cfg.d_model
        self.layers = nn.ModuleList(
            TemporalDecoderLayer(
                d,
                cfg.heads,
                cfg.ffn_dim,
                cfg.dropout,
                # Layer 0 never sees context (none exists before the first stage), so it gets no block.
                ContextCrossAttention(d, cfg.context_heads, cfg.context_ffn_dim, cfg.dropout)
                if cfg.context_in_temporal and i > 0
                else None,
            )
            for i in range(cfg.dec_layers)
        )
        self.norm = nn.LayerNorm(d)

    def stage(
        self, k: int, queries: Tensor, memory: DecoderMemory, context: tuple[Tensor, Tensor] | None
    ) -> tuple[Tensor, Tensor]:
        """TDB_k: temporal queries P_{k-1} (B, T, d) -> (P_k (B, T, d), P_k after the shared norm (B, T, d)).

        context: (tokens (B, S_c, d), pad (B, S_c)) of stage k - 1 with `context_in_temporal`, else None.
        """
        queries = self.layers[k](
            queries, memory.time_pos, memory.time_mask, memory.tokens, memory.key, memory.pad, context
        )
        return queries, self.norm(queries)
