"""The encoder's output as the decoders and ICG read it, built once per forward pass.

Layout (frames as the batch, the release's): `tokens` (B*T, S, d) with S = H'W' appearance + L text + H'W' motion
tokens per frame, in that order.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from torch import Tensor


@dataclass(frozen=True)
class DecoderMemory:
    """tokens: (B*T, S, d) encoder output.
    pos: (B*T, S, d) decoder position (the 2-D sine on the appearance tokens, zero on text and motion, as the release).
    pad: (B*T, S) bool, True = padded token (the first cell of every frame never is, as the release).
    visible: ~pad when the spatial cross-attention masks padding (`spatial_key_padding_mask`), else None.
    time_pos: (T, d) sine time table rows. time_mask: (B, T) bool, True = padded frame. grid: (H', W').
    """

    tokens: Tensor
    pos: Tensor
    pad: Tensor
    visible: Tensor | None
    time_pos: Tensor
    time_mask: Tensor
    grid: tuple[int, int]

    @cached_property
    def key(self) -> Tensor:
        """tokens + pos (B*T, S, d), the keys of the temporal cross-attention, computed once, at the first use.

        At the first use, not before: autograd sums the gradients that reach `tokens` in the order of their uses,
        so the sum is created where the release creates it (after the text queries), which keeps training
        bit-identical.
        """
        return self.tokens + self.pos

    @property
    def text(self) -> tuple[Tensor, Tensor]:
        """The text tokens (B*T, L, d) of every frame and their padding mask (B*T, L), True = padding token."""
        hw = self.grid[0] * self.grid[1]
        end = self.tokens.shape[1] - hw
        return self.tokens[:, hw:end], self.pad[:, hw:end]
