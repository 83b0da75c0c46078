"""Motion backbone: torchvision's Video Swin Transformer (`SwinTransformer3d`), frozen, giving per-frame features.

The release uses Video Swin-T in the MTTR variant: patch (1, 4, 4) (no temporal downsampling; the Kinetics-400
patch weights are summed over time), window (8, 7, 7), embed 96, depths 2-2-6-2, heads 3-6-12-24, stochastic
depth 0.2, and feeds the output of the LAST stage (before patch merging, without the classifier's final
LayerNorm) to `input_proj2`. torchvision's `SwinTransformer3d` computes the same thing once the weights are
renamed (`backbone_weights.official_motion_key`; shared/fixtures/official/README.md section 3), so only its
`patch_embed` and `features` are kept here; its final `norm`, pooling and classifier are never built into this
module. State-dict keys are torchvision's: `patch_embed.*`, `features.{2i}.{j}.*` (stage i, block j),
`features.{2i+1}.*` (patch merging after stage i).

Frozen: every parameter has requires_grad False, and the module stays in eval mode when its parent trains,
unless `drop_path_in_train` is set: the release never calls eval() on it, so its DropPath (linspace(0, 0.2) over
the blocks, the same schedule as torchvision's stochastic depth) is active during the release's training.

Attention: 'torchvision' runs torchvision's own window attention (bit-identical to the release). 'sdpa' computes
the same attention with `F.scaled_dot_product_attention`, grouped by shift-mask class and over chunks of windows
(`ChunkedWindowAttention3d`): at the release's evaluation size (64 frames of 420x588) the first stage has 2520
windows of 392 tokens, whose explicit score tensor alone is 4.6 GB (plus a 1.5 GB shift mask); chunked SDPA needs
a few hundred MB, and with one gather/scatter in place of torchvision's roll + partition copies the backbone
takes about 0.6x torchvision's CPU time. The two agree to float rounding (about 3e-6 on the fixture).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.swin_transformer import SwinTransformerBlock

# The two private helpers make the SDPA path pad and shrink windows exactly like torchvision's own attention.
from torchvision.models.video.swin_transformer import (
    ShiftedWindowAttention3d,
    SwinTransformer3d,
    _compute_pad_size_3d,
    _get_window_and_shift_size,
)

ATTENTIONS = ("torchvision", "sdpa")


def _window_partition(x: Tensor, window: list[int]) -> Tensor:
    """(B, T, H, W, C) with T, H, W multiples of `window` -> (B * nW, Wt*Wh*Ww, C), windows in t, h, w order."""
    b, t, h, w, c = x.shape
    x = x.view(b, t // window[0], window[0], h // window[1], window[1], w // window[2], window[2], c)
    return x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, window[0] * window[1] * window[2], c)


def _window_classes(grid: list[int], shift: list[int], device: torch.device) -> Tensor:
    """Mask class of every window of one video, (nW,) int64 in [0, 8).

    After the cyclic shift, a window holds tokens of different regions (which must not attend to each other)
    only if it is the LAST window along an axis with a shift; its region pattern depends only on which axes
    those are. Bit 2/1/0 = last along t/h/w (with a shift). Class 0, no split, is most windows.
    """
    t, h, w = (
        torch.arange(n, device=device) == n - 1 if s > 0 else torch.zeros(n, dtype=torch.bool, device=device)
        for n, s in zip(grid, shift, strict=True)
    )
    return (t[:, None, None] * 4 + h[None, :, None] * 2 + w[None, None, :]).flatten().long()


def _class_mask(cls: int, window: list[int], shift: list[int], device: torch.device) -> Tensor:
    """(N, N) additive mask of a window class: -100 between tokens of different regions (torchvision's value)."""
    axes = []
    for bit, size, s in zip((4, 2, 1), window, shift, strict=True):
        split = cls & bit and s > 0
        axes.append(
            (torch.arange(size, device=device) >= size - s)
            if split
            else torch.zeros(size, dtype=torch.bool, device=device)
        )
    labels = (axes[0][:, None, None] * 4 + axes[1][None, :, None] * 2 + axes[2][None, None, :]).flatten()
    return (labels[:, None] != labels[None, :]).float() * -100.0


def _window_order(
    size: list[int], window: list[int], shift: list[int], device: torch.device
) -> tuple[Tensor, list[tuple[int, int, int]]]:
    """Where every window token comes from, with windows sorted by mask class.

    Returns the flat index into the padded (T, H, W) volume of each token of each window after the cyclic shift,
    (nW * N,) int64 (torch.roll by -shift puts original position (p + shift) mod size at p), and the runs
    [(class, first window, end window)] of the class-sorted windows. One gather with this index replaces
    torchvision's roll + partition copies, and one scatter its reverse + roll back.
    """
    coords = [(torch.arange(n, device=device) + s) % n for n, s in zip(size, shift, strict=True)]
    flat = coords[0][:, None, None] * (size[1] * size[2]) + coords[1][None, :, None] * size[2] + coords[2]
    windows = _window_partition(flat[None, ..., None], window)[..., 0]  # (nW, N)
    classes = _window_classes([n // w for n, w in zip(size, window, strict=True)], shift, device)
    order = torch.argsort(classes, stable=True)
    values, counts = torch.unique_consecutive(classes[order], return_counts=True)
    ends = counts.cumsum(0).tolist()
    runs = [(cls, end - n, end) for cls, n, end in zip(values.tolist(), counts.tolist(), ends, strict=True)]
    return windows[order].flatten(), runs


class ChunkedWindowAttention3d(ShiftedWindowAttention3d):
    """torchvision's 3D (shifted) window attention computed with SDPA, by window class and in chunks.

    Same parameters, buffers and result as `ShiftedWindowAttention3d` (up to float rounding). torchvision builds
    one (windows, heads, N, N) score tensor plus a (windows, N, N) shift mask; here windows are grouped by
    their mask class (`_window_classes`), so each SDPA call takes one broadcast (1, heads, N, N) bias + mask, and
    at most `attention_chunk` (window, head) pairs are attended per call, which bounds memory.
    """

    def __init__(
        self,
        dim: int,
        window_size: list[int],
        shift_size: list[int],
        num_heads: int,
        attention_dropout: float = 0.0,
        dropout: float = 0.0,
        *,
        attention_chunk: int = 512,
    ) -> None:
        super().__init__(dim, window_size, shift_size, num_heads, attention_dropout=attention_dropout, dropout=dropout)
        self.attention_chunk = attention_chunk

    def _attend(self, part: Tensor, mask: Tensor) -> Tensor:
        """(n, N, C) windows -> attention output after the projection, (n, N, C)."""
        n, tokens, c = part.shape
        qkv = F.linear(part, self.qkv.weight, self.qkv.bias)
        q, k, v = qkv.reshape(n, tokens, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        p_drop = self.attention_dropout if self.training else 0.0
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p_drop)
        out = F.linear(attended.transpose(1, 2).reshape(n, tokens, c), self.proj.weight, self.proj.bias)
        return F.dropout(out, p=self.dropout, training=self.training)

    def forward(self, x: Tensor) -> Tensor:
        b, t, h, w, c = x.shape
        window, shift = _get_window_and_shift_size(self.shift_size.copy(), [t, h, w], self.window_size.copy())
        bias = self.get_relative_position_bias(window)  # (1, heads, N, N)
        pad = _compute_pad_size_3d((t, h, w), tuple(window))
        if any(pad):
            x = F.pad(x, (0, 0, 0, pad[2], 0, pad[1], 0, pad[0]))
        size = [t + pad[0], h + pad[1], w + pad[2]]
        index, runs = _window_order(size, window, shift, x.device)
        tokens = window[0] * window[1] * window[2]
        flat = x.reshape(b, -1, c)
        windows = flat.index_select(1, index).view(b, -1, tokens, c)  # (B, nW, N, C), windows sorted by class
        out = torch.empty_like(windows)
        per_call = max(1, self.attention_chunk // (self.num_heads * b))
        # Loops over window classes (at most 8) and chunks of windows, not over frames: they bound memory.
        for cls, first, end in runs:
            mask = bias if cls == 0 else bias + _class_mask(cls, window, shift, x.device)
            for start in range(first, end, per_call):
                stop = min(start + per_call, end)
                part = windows[:, start:stop].reshape(-1, tokens, c)
                out[:, start:stop] = self._attend(part, mask).view(b, stop - start, tokens, c)
        result = torch.empty_like(flat).index_copy_(1, index, out.view(b, -1, c))
        result = result.view(b, *size, c)
        return result[:, :t, :h, :w].contiguous() if any(pad) else result


def _block_with(attn_layer: Any) -> Any:
    """A `block` factory for SwinTransformer3d that swaps the attention layer it passes to the block."""

    def make(*args: Any, **kwargs: Any) -> nn.Module:
        kwargs["attn_layer"] = attn_layer
        return SwinTransformerBlock(*args, **kwargs)

    return make


class VideoSwinBackbone(nn.Module):
    """Frozen Video Swin: frames of B videos -> per-frame features of the last stage.

    Args:
        embed_dim, depths, num_heads, patch_size, window_size, stochastic_depth_prob: SwinTransformer3d's.
            The release: 96, (2, 2, 6, 2), (3, 6, 12, 24), (1, 4, 4), (8, 7, 7), 0.2.
        drop_path_in_train: follow the parent's train() (the release: DropPath active in training);
            False keeps the module in eval mode always.
        attention: 'torchvision' or 'sdpa' (see the module docstring).
        attention_chunk: (window, head) pairs per SDPA call for attention='sdpa'.
    `out_channels` = embed_dim * 2**(len(depths)-1); `stride` = patch_size[1] * 2**(len(depths)-1).
    """

    def __init__(
        self,
        embed_dim: int = 96,
        depths: tuple[int, ...] | list[int] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] | list[int] = (3, 6, 12, 24),
        patch_size: tuple[int, ...] | list[int] = (1, 4, 4),
        window_size: tuple[int, ...] | list[int] = (8, 7, 7),
        stochastic_depth_prob: float = 0.2,
        drop_path_in_train: bool = False,
        attention: str = "torchvision",
        attention_chunk: int = 512,
    ) -> None:
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f"motion attention {attention!r}: expected one of {ATTENTIONS}")
        if len(depths) != len(num_heads):
            raise ValueError(f"motion backbone: depths {list(depths)} and num_heads {list(num_heads)} differ in length")
        attn_layer = (
            ShiftedWindowAttention3d
            if attention == "torchvision"
            else partial(ChunkedWindowAttention3d, attention_chunk=attention_chunk)
        )
        swin = SwinTransformer3d(
            patch_size=list(patch_size),
            embed_dim=embed_dim,
            depths=list(depths),
            num_heads=list(num_heads),
            window_size=list(window_size),
            stochastic_depth_prob=stochastic_depth_prob,
            block=_block_with(attn_layer),
        )
        # pos_drop is Dropout(0) (the release's drop_rate is 0): not kept. norm/avgpool/head: never used.
        self.patch_embed = swin.patch_embed
        self.features = swin.features
        self.num_stages = len(depths)
        self.out_channels = embed_dim * 2 ** (len(depths) - 1)
        self.stride = patch_size[1] * 2 ** (len(depths) - 1)
        self.drop_path_in_train = drop_path_in_train
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> VideoSwinBackbone:
        return super().train(mode and self.drop_path_in_train)

    def forward_stages(self, frames: Tensor, num_frames: int, last_only: bool = False) -> list[Tensor]:
        """Every stage's output before patch merging (only the last one if `last_only`): (B*T, C_s, H_s, W_s).

        frames: (B*T, 3, H, W) ImageNet-normalized, video-major (the T frames of video 0 first); num_frames = T.
        """
        bt, _, height, width = frames.shape
        if num_frames < 1 or bt % num_frames:
            raise ValueError(f"motion backbone: {bt} frames is not a multiple of num_frames={num_frames}")
        x = frames.reshape(bt // num_frames, num_frames, 3, height, width).transpose(1, 2)  # (B, 3, T, H, W)
        x = self.patch_embed(x)  # (B, T, H/4, W/4, C)
        outputs = []
        for index, module in enumerate(self.features):
            x = module(x)
            is_stage = index % 2 == 0  # odd indices are patch merging
            if is_stage and (not last_only or index == len(self.features) - 1):
                outputs.append(x.permute(0, 1, 4, 2, 3).flatten(0, 1))
        return outputs

    def forward(self, frames: Tensor, num_frames: int) -> Tensor:
        """(B*T, 3, H, W) -> last stage (B*T, out_channels, ceil(H/stride), ceil(W/stride))."""
        return self.forward_stages(frames, num_frames, last_only=True)[0]


def build_motion(cfg: dict[str, Any], where: str = "params.yaml:model.backbones.motion") -> VideoSwinBackbone:
    """Build from a params section whose keys are `VideoSwinBackbone`'s arguments."""
    allowed = {
        "embed_dim",
        "depths",
        "num_heads",
        "patch_size",
        "window_size",
        "stochastic_depth_prob",
        "drop_path_in_train",
        "attention",
        "attention_chunk",
    }
    unknown = sorted(set(cfg) - allowed)
    if unknown:
        raise KeyError(f"{where}: unknown keys {unknown} (known: {sorted(allowed)})")
    return VideoSwinBackbone(**cfg)
