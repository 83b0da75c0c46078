"""Spatial-decoding blocks (SDB, paper Fig. 2(b)) with the release's DAB/Conditional-DETR machinery.

One spatial query per frame, anchored by a box. Per layer (post-norm):
1. self-attention over the T frame queries of a video: q = Wqc tgt + Wqt time + Wqp pos, k likewise, v = Wv tgt,
   then a full nn.MultiheadAttention (which has its own in-projection, as in the release);
2. the context cross-attention (layers >= 1, when the previous stage selected frames);
3. anchor-conditioned cross-attention of each frame query to its own frame's encoder tokens. Per head the query is
   [content (+ pos at layer 0) ; sine-projected anchor] and the key [content (+ pos at layer 0) ; pos], 2d wide in
   total, the value d wide; no input projection inside, scale (2d / heads)^-0.5. The release passes no key padding
   mask here (`spatial_key_padding_mask` switches it on);
4. ReLU FFN.
In the decoders the position of text and motion tokens is zero (only appearance tokens carry the 2-D sine).

`SpatialDecoder.stage(k, ...)` runs one decoding stage the way DAB-DETR's decoder runs a layer: the anchor's sine
embedding gives the query position (`ref_point_head`) and, scaled by the query content (`query_scale`, from the
second layer on), the positional part of the cross-attention query; after the layer the box head predicts the
stage's boxes (relative to the anchor with `box_refine='anchor'`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cgstvg.model.blocks import MLP
from cgstvg.model.config import CGSTVGConfig
from cgstvg.model.context_attention import ContextCrossAttention
from cgstvg.model.memory import DecoderMemory
from cgstvg.model.position_encoding import sine_box_embedding


class AnchorCrossAttention(nn.Module):
    """Multi-head attention on pre-projected 2d-wide q/k and d-wide v (Conditional DETR's concatenation)."""

    def __init__(self, d_model: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.dropout_p = dropout
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, visible: Tensor | None) -> Tensor:
        """
        Args:
            q: (N, heads, 1, 2d/heads); k: (N, heads, S, 2d/heads); v: (N, heads, S, d/heads).
            visible: optional (N, S) bool, True = may be attended.
        Returns:
            (N, d).
        """
        mask = None if visible is None else visible[:, None, None, :]
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout_p if self.training else 0.0
        )
        return self.out_proj(out.flatten(1))


class SpatialDecoderLayer(nn.Module):
    def __init__(
        self,
        d_model: int,
        heads: int,
        ffn_dim: int,
        dropout: float,
        is_first: bool,
        context_attn: ContextCrossAttention | None,
    ):
        super().__init__()
        self.heads = heads
        self.is_first = is_first
        self.sa_qcontent_proj = nn.Linear(d_model, d_model)
        self.sa_qpos_proj = nn.Linear(d_model, d_model)
        self.sa_qtime_proj = nn.Linear(d_model, d_model)
        self.sa_kcontent_proj = nn.Linear(d_model, d_model)
        self.sa_kpos_proj = nn.Linear(d_model, d_model)
        self.sa_ktime_proj = nn.Linear(d_model, d_model)
        self.sa_v_proj = nn.Linear(d_model, d_model)
        self.self_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.context_attn = context_attn
        self.ca_qcontent_proj = nn.Linear(d_model, d_model)
        # The query position enters the cross-attention content only at layer 0 (DAB-DETR), so later layers have
        # no such projection (the release sets it to None there too).
        self.ca_qpos_proj = nn.Linear(d_model, d_model) if is_first else None
        self.ca_kcontent_proj = nn.Linear(d_model, d_model)
        self.ca_kpos_proj = nn.Linear(d_model, d_model)
        self.ca_v_proj = nn.Linear(d_model, d_model)
        self.ca_qpos_sine_proj = nn.Linear(d_model, d_model)
        self.cross_attn = AnchorCrossAttention(d_model, heads, dropout)
        self.linear1 = nn.Linear(d_model, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def _heads(self, x: Tensor) -> Tensor:
        """(N, S, d) -> (N, S, heads, d/heads)."""
        return x.unflatten(-1, (self.heads, -1))

    def forward(
        self,
        tgt: Tensor,
        query_pos: Tensor,
        query_sine: Tensor,
        time_pos: Tensor,
        time_mask: Tensor,
        memory: Tensor,
        memory_pos: Tensor,
        memory_visible: Tensor | None,
        context: tuple[Tensor, Tensor] | None,
    ) -> Tensor:
        """
        Args:
            tgt: (B, T, d) spatial queries Q_{k-1}.
            query_pos: (B, T, d) ref_point_head(sine(anchor)).
            query_sine: (B, T, d) sine(anchor)[..., :d], scaled by query_scale(tgt) after layer 0.
            time_pos: (T, d) sine time table rows.
            time_mask: (B, T) True = padded frame (masked as a self-attention key).
            memory: (B*T, S, d) encoder output; memory_pos: (B*T, S, d) decoder position.
            memory_visible: (B*T, S) True = may be attended, or None (release: every token is attended).
            context: optional (tokens (B, S_c, d), pad (B, S_c)) from the previous stage.
        Returns:
            Q_k (B, T, d).
        """
        b, t, d = tgt.shape
        q = self.sa_qcontent_proj(tgt) + self.sa_qtime_proj(time_pos) + self.sa_qpos_proj(query_pos)
        k = self.sa_kcontent_proj(tgt) + self.sa_ktime_proj(time_pos) + self.sa_kpos_proj(query_pos)
        attn = self.self_attn(q, k, self.sa_v_proj(tgt), key_padding_mask=time_mask, need_weights=False)[0]
        tgt = self.norm1(tgt + self.dropout1(attn))
        if context is not None and self.context_attn is not None:
            tgt = self.context_attn(tgt, *context)

        q_content = self.ca_qcontent_proj(tgt)
        k_content = self.ca_kcontent_proj(memory)
        k_pos = self.ca_kpos_proj(memory_pos)
        if self.ca_qpos_proj is not None:
            q_content = q_content + self.ca_qpos_proj(query_pos)
            k_content = k_content + k_pos
        q_sine = self.ca_qpos_sine_proj(query_sine)
        q_cat = torch.cat([self._heads(q_content), self._heads(q_sine)], dim=-1).reshape(b * t, 1, self.heads, -1)
        k_cat = torch.cat([self._heads(k_content), self._heads(k_pos)], dim=-1)
        v = self._heads(self.ca_v_proj(memory))
        attn = self.cross_attn(q_cat.transpose(1, 2), k_cat.transpose(1, 2), v.transpose(1, 2), memory_visible)
        tgt = self.norm2(tgt + self.dropout2(attn.view(b, t, d)))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(ffn))


class SpatialDecoder(nn.Module):
    """The stack of SDB layers and their DAB query maths.

    `ref_point_head` (MLP 2d -> d -> d) turns the anchor's sine embedding into the query position;
    `query_scale` (MLP d -> d -> d) rescales the (y, x) sine part from the second layer on. Layers >= 1 own a
    context cross-attention block when the model uses context (layer 0 can never receive context).
    """

    def __init__(self, cfg: CGSTVGConfig):
        super().__init__()
        d = cfg.d_model
        self.d_model = d
        self.refine_anchor = cfg.box_refine == "anchor"
        self.layers = nn.ModuleList(
            SpatialDecoderLayer(
                d,
                cfg.heads,
                cfg.ffn_dim,
                cfg.dropout,
                is_first=i == 0,
                context_attn=ContextCrossAttention(d, cfg.context_heads, cfg.context_ffn_dim, cfg.dropout)
                if cfg.uses_context and i > 0
                else None,
            )
            for i in range(cfg.dec_layers)
        )
        self.query_scale = MLP(d, d, d, 2)
        self.ref_point_head = MLP(2 * d, d, d, 2)

    def stage(
        self,
        k: int,
        queries: Tensor,
        anchors: Tensor,
        memory: DecoderMemory,
        context: tuple[Tensor, Tensor] | None,
        box_head: nn.Module,
    ) -> tuple[Tensor, Tensor]:
        """SDB_k and its boxes.

        Args:
            k: the stage (layer) index.
            queries: (B, T, d) spatial queries Q_{k-1}.
            anchors: (B, T, 4) detached normalised (cx, cy, w, h) boxes of the previous stage (or the initial ones).
            memory: the encoder output.
            context: (tokens (B, S_c, d), pad (B, S_c)) of stage k - 1, or None.
            box_head: the head's box MLP (d -> 4 logits); it is the head's module, so its state-dict name stays
                `box_head`.
        Returns:
            Q_k (B, T, d) and the stage's boxes (B, T, 4), normalised (cx, cy, w, h).
        """
        d = self.d_model
        sine = sine_box_embedding(anchors, d)  # (B, T, 2d)
        query_pos = self.ref_point_head(sine)
        query_sine = sine[..., :d] if k == 0 else sine[..., :d] * self.query_scale(queries)
        queries = self.layers[k](
            queries,
            query_pos,
            query_sine,
            memory.time_pos,
            memory.time_mask,
            memory.tokens,
            memory.pos,
            memory.visible,
            context,
        )
        delta = box_head(queries)
        if self.refine_anchor:
            delta = delta + torch.logit(anchors, eps=1e-5)
        return queries, delta.sigmoid()
