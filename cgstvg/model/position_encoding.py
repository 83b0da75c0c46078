"""Sine position encodings: 2-D for feature maps, 1-D for frame indices, and the box (anchor) embedding.

All three follow DETR-family conventions exactly as the release computes them (the fixtures pin them
bit-for-bit), written here because torch has no ready-made sine position encoding.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _sine_cosine(coords: Tensor, num_feats: int, temperature: float = 10000.0) -> Tensor:
    """(..., ) coordinates -> (..., num_feats): sin on even, cos on odd features; pairs share a frequency."""
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=coords.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)
    pos = coords[..., None] / dim_t
    return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)


def sine_position_2d(mask: Tensor, d_model: int) -> Tensor:
    """DETR 2-D sine encoding of a padding mask.

    Args:
        mask: (N, H, W) bool, True = padded cell.
        d_model: channels of the result; d_model / 2 per axis.
    Returns:
        (N, H, W, d_model) float32: channels [0, d/2) encode y, [d/2, d) encode x. Positions are the cumulative
        count of real cells, normalised to (0, 2*pi] by the last real row / column (eps 1e-6).
    """
    not_mask = ~mask
    y_embed = not_mask.cumsum(1, dtype=torch.float32)
    x_embed = not_mask.cumsum(2, dtype=torch.float32)
    eps, scale = 1e-6, 2 * math.pi
    y_embed = y_embed / (y_embed[:, -1:, :] + eps) * scale
    x_embed = x_embed / (x_embed[:, :, -1:] + eps) * scale
    half = d_model // 2
    return torch.cat((_sine_cosine(y_embed, half), _sine_cosine(x_embed, half)), dim=-1)


def sine_time_table(rows: int, d_model: int) -> Tensor:
    """The release's 1-D frame-index table: (rows, d_model) float32, sin on even and cos on odd channels.

    Row t encodes frame index t with frequencies exp(-2i * ln(10000) / d_model); the decoders use rows 0..T-1.
    Computed in float64 and rounded once, so the table is the same on every CPU (the release computes it in
    float32, where vectorised exp/sin kernels round differently from machine to machine; its checkpoints store
    their table, which `cgstvg.model.convert` checks against this one with `sine_time_table_tolerance`).
    """
    position = torch.arange(rows, dtype=torch.float64).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float64) * (-math.log(10000.0) / d_model))
    table = torch.zeros(rows, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * div_term)
    table[:, 1::2] = torch.cos(position * div_term)
    return table.float()


# Float32 unit roundoff: one rounding of a basic operation has relative error <= 2**-24.
FLOAT32_EPS = 2.0**-24


def sine_time_table_tolerance(rows: int, exp_ulps: float = 2.0, sin_ulps: float = 2.0) -> float:
    """Largest |float32 evaluation - exact value| of any entry of `sine_time_table(rows, d)`, for any d.

    The release evaluates sin(a) with a = p * exp(-y), p <= rows - 1, 0 <= y <= ln(10000), all in float32:
    * y = k * fl(ln(10000) / d) carries two roundings, so |dy| <= 2 eps y, and exp(-y) adds its kernel error
      (at most `exp_ulps` ulps, i.e. 2 eps each): exp(-y) is off by a factor (1 + 2 eps y + 2 eps exp_ulps);
    * the product p * exp(-y) adds one rounding (eps): |da| <= a eps (2 y + 2 exp_ulps + 1);
    * |sin'| <= 1 carries da into the result, and sin/cos add their own `sin_ulps` ulps (<= eps each: |value| <= 1).
    The worst entry is bounded at the largest argument: a <= rows - 1, and a * 2y = 2 p y e^-y <= 2 p / e, so
    |error| <= eps ((rows - 1) (2/e + 2 exp_ulps + 1) + sin_ulps). The default 2 ulps per kernel are twice what
    glibc and SLEEF (the kernels torch's CPU code calls) guarantee. For 201 rows this is 6.8e-5; a table that is
    something else (another temperature, shifted or shuffled rows, sin/cos swapped) is off by 1e-2 or more.
    """
    return FLOAT32_EPS * ((rows - 1) * (2 / math.e + 2 * exp_ulps + 1) + sin_ulps)


def sine_box_embedding(boxes: Tensor, d_model: int) -> Tensor:
    """DAB-DETR anchor embedding.

    Args:
        boxes: (..., 4) normalised (cx, cy, w, h).
    Returns:
        (..., 2 * d_model): [sine(cy) ; sine(cx) ; sine(w) ; sine(h)], d_model / 2 channels each, every coordinate
        scaled by 2*pi first. The first d_model channels (y, x) are the part that feeds the cross-attention.
    """
    half = d_model // 2
    scaled = boxes * (2 * math.pi)
    cx, cy, w, h = scaled.unbind(-1)
    return torch.cat([_sine_cosine(c, half) for c in (cy, cx, w, h)], dim=-1)
