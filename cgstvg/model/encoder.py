"""The multimodal encoder: per-frame self-attention over [appearance ; text ; motion] tokens (paper Sec. 3.1).

As in the release there is no cross-frame interaction here (frames are the batch), no type embedding and no time
embedding; the 2-D sine position is added to queries and keys of the appearance AND motion tokens, zero for text.
Layers are post-norm (DETR), followed by a final LayerNorm.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from cgstvg.model.memory_savers import maybe_checkpoint


class EncoderLayer(nn.Module):
    """Post-norm self-attention + ReLU FFN; position added to q and k only."""

    def __init__(self, d_model: int, heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, src: Tensor, pos: Tensor, key_padding_mask: Tensor) -> Tensor:
        """src, pos: (N, S, d); key_padding_mask: (N, S) True = ignore. Returns (N, S, d)."""
        qk = src + pos
        attn = self.self_attn(qk, qk, src, key_padding_mask=key_padding_mask, need_weights=False)[0]
        src = self.norm1(src + self.dropout1(attn))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout2(ffn))


class MultimodalEncoder(nn.Module):
    """`num_layers` encoder layers, then a final LayerNorm."""

    def __init__(self, d_model: int, heads: int, ffn_dim: int, num_layers: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(d_model, heads, ffn_dim, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)
        self.checkpoint = False  # checkpoint each layer (cgstvg.model.memory_savers; training only)

    def forward(self, tokens: Tensor, pos: Tensor, key_padding_mask: Tensor) -> Tensor:
        """tokens, pos: (N, S, d) with N = frames; key_padding_mask: (N, S). Returns the memory (N, S, d)."""
        out = tokens
        for layer in self.layers:
            out = maybe_checkpoint(self.checkpoint, layer, out, pos, key_padding_mask)
        return self.norm(out)
