"""Small building blocks: the release's MLP, the text feature resizer and the anchor initialiser."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class MLP(nn.Module):
    """Linear layers with ReLU between them (DETR's MLP), with optional dropout.

    The release's MLP applies dropout after EVERY layer, the last one included, so in training the output logits
    themselves are dropped out; `dropout_on_output=False` stops after the hidden layers instead.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        num_layers: int,
        dropout: float = 0.0,
        dropout_on_output: bool = True,
    ):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, dims[1:] + [out_dim]))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.dropout_on_output = dropout_on_output

    def forward(self, x: Tensor) -> Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = F.relu(x)
            if self.dropout is not None and (i < last or self.dropout_on_output):
                x = self.dropout(x)
        return x


class FeatureResizer(nn.Module):
    """Text features to d_model: Linear -> LayerNorm (eps 1e-12) -> Dropout, as MDETR's resizer."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float):
        super().__init__()
        self.fc = nn.Linear(in_dim, out_dim)
        self.layer_norm = nn.LayerNorm(out_dim, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.layer_norm(self.fc(x)))


class AnchorInit(nn.Module):
    """Per-frame initial anchor box from the frame's pooled encoder feature (the release's `pos_fc`).

    LayerNorm -> Dropout -> Linear(d, 4) -> ReLU -> LayerNorm(4), both norms with eps 1e-12; the caller applies
    the sigmoid. Input (..., d_model), output (..., 4) logits of (cx, cy, w, h).
    """

    def __init__(self, d_model: int, dropout: float):
        super().__init__()
        self.norm_in = nn.LayerNorm(d_model, eps=1e-12)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(d_model, 4)
        self.norm_out = nn.LayerNorm(4, eps=1e-12)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm_out(F.relu(self.fc(self.dropout(self.norm_in(x)))))
