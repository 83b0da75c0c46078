"""Appearance backbone: a per-frame 2D CNN giving one feature map per frame.

Two kinds share one interface (`forward(frames) -> features`, plus `out_channels` and `stride`):

* `ResNetTrunk`: a torchvision ResNet (`resnet18/34/50/101`) with `FrozenBatchNorm2d`, cut after `layer4`
  (or `layer3`). This is the release's backbone (ResNet-101, layer4, stride 32, 2048 channels): the stem
  (conv1, bn1) and layer1 are frozen, layer2-4 train (models/vision_model/backbone.py of the release).
  Its state-dict keys are torchvision's (`conv1.weight`, `layer1.0.bn1.running_mean`, ...), which are the
  release's keys without the `vis_encoder.0.body.` prefix (see `backbone_weights.official_appearance_key`).
* `SmallConvNet`: a small trainable CNN (stride-2 conv-BN-ReLU blocks) for the CPU default; frozen random
  ResNet features read colours and shapes of small objects poorly (shared/reference/synthetic-default-study.md).

Frames are ImageNet-normalized RGB, (N, 3, H, W) with N = frames of all videos. Padded pixels are marked by a
(N, H, W) bool mask (True = padding) that `downsample_mask` brings to the feature grid the way DETR does.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d

from cgstvg.model.memory_savers import maybe_checkpoint

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")
_TRUNK_LAYERS = ("layer1", "layer2", "layer3", "layer4")
# The release trains layer2-4 and freezes the stem and layer1 (BackboneBase in the release).
_RELEASE_TRAINABLE = ("layer2", "layer3", "layer4")


def downsample_mask(mask: Tensor, size: tuple[int, int]) -> Tensor:
    """Padding mask (N, H, W) bool -> (N, h, w) bool on a feature grid of `size`, by nearest interpolation (DETR)."""
    return F.interpolate(mask[None].float(), size=size)[0].to(torch.bool)


def _run_in_chunks(fn: Any, frames: Tensor, chunk: int) -> Tensor:
    """`fn` over slices of at most `chunk` frames, concatenated.

    A memory tiling, not a per-frame loop: the layers are per-frame (frozen BN, convolutions, and BatchNorm in
    eval mode), so the result equals one call on all frames up to float rounding (the convolution kernels may
    block a smaller batch differently), while the largest activation shrinks from N frames to `chunk` frames.
    In training mode BatchNorm's batch statistics would differ per chunk: use chunks for inference only.
    """
    if chunk <= 0 or frames.shape[0] <= chunk:
        return fn(frames)
    return torch.cat([fn(part) for part in frames.split(chunk)])


def _checkpointed_chunks(fn: Any, frames: Tensor, chunk: int) -> Tensor:
    """`fn` over slices of `chunk` frames, each slice checkpointed (`train.memory.checkpoint_appearance_frames`):
    the backward recomputes one slice at a time, so it holds one slice's activations, not all frames'."""
    return torch.cat([maybe_checkpoint(True, fn, part) for part in frames.split(chunk)])


class ResNetTrunk(nn.Module):
    """torchvision ResNet up to `last_layer`, with frozen BatchNorm.

    Args:
        name: one of `RESNETS`.
        last_layer: 'layer4' (release: stride 32) or 'layer3' (stride 16).
        trainable: train layer2 onwards like the release; False freezes every parameter.
        frame_chunk: run at most this many frames at a time (0 = all at once); see `_run_in_chunks`.
        channels_last: keep weights and activations in NHWC memory order, which oneDNN convolves faster on CPU
            (same result up to float rounding; the output is returned contiguous, NCHW).
        fold_batchnorm: run each conv + FrozenBatchNorm2d pair as one convolution with the BN affine folded into
            its weights and bias (see `_folded_forward`); the same function up to float rounding, without the two
            elementwise passes per BN (about a quarter of the ResNet's CPU time). Gradients reach the conv
            weights the same way. False runs torchvision's modules as they are.
    Input (N, 3, H, W) float; output (N, out_channels, ceil(H/stride), ceil(W/stride)).
    """

    def __init__(
        self,
        name: str = "resnet101",
        last_layer: str = "layer4",
        trainable: bool = True,
        frame_chunk: int = 0,
        channels_last: bool = False,
        fold_batchnorm: bool = True,
    ) -> None:
        super().__init__()
        if name not in RESNETS:
            raise ValueError(f"appearance backbone {name!r}: expected one of {RESNETS} or 'small_cnn'")
        if last_layer not in ("layer3", "layer4"):
            raise ValueError(f"appearance last_layer {last_layer!r}: expected 'layer3' or 'layer4'")
        net = getattr(torchvision.models, name)(weights=None, norm_layer=FrozenBatchNorm2d)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        # Only the layers up to `last_layer` become attributes, so the state dict holds no unused weights.
        self.layer_names = _TRUNK_LAYERS[: _TRUNK_LAYERS.index(last_layer) + 1]
        for layer in self.layer_names:
            setattr(self, layer, getattr(net, layer))
        last_block = getattr(self, last_layer)[-1]
        self.out_channels = (last_block.conv3 if hasattr(last_block, "conv3") else last_block.conv2).out_channels
        self.stride = 32 if last_layer == "layer4" else 16
        self.frame_chunk = frame_chunk
        self.checkpoint_frames = 0  # set by cgstvg.model.memory_savers (training only)
        self.fold_batchnorm = fold_batchnorm
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.to(memory_format=self.memory_format)
        for param_name, param in self.named_parameters():
            param.requires_grad_(trainable and param_name.startswith(_RELEASE_TRAINABLE))

    def _trunk(self, frames: Tensor) -> Tensor:
        frames = frames.contiguous(memory_format=self.memory_format)
        x = self.maxpool(self.relu(self.bn1(self.conv1(frames))))
        for layer in self.layer_names:
            x = getattr(self, layer)(x)
        return x.contiguous()

    def _folded_weights(self) -> dict[str, tuple[Tensor, Tensor]]:
        """{conv name: (weight, bias)} with the following FrozenBatchNorm2d folded in (torchvision's formula:
        scale = w / sqrt(running_var + eps), shift = b - running_mean * scale)."""
        folded = {}
        modules = dict(self.named_modules())
        for name, bn in modules.items():
            if not isinstance(bn, FrozenBatchNorm2d):
                continue
            conv_name = name[: -len("1")] + "0" if name.endswith("downsample.1") else name.replace("bn", "conv")
            conv = modules[conv_name]
            scale = bn.weight * (bn.running_var + bn.eps).rsqrt()
            folded[conv_name] = (conv.weight * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale)
        return folded

    def _folded_forward(self, frames: Tensor, folded: dict[str, tuple[Tensor, Tensor]]) -> Tensor:
        """torchvision's ResNet forward (stem, then BasicBlock/Bottleneck: conv-bn-relu ..., + identity or
        downsample, relu), written out because every conv-bn pair becomes one `F.conv2d` with folded weights."""
        modules = dict(self.named_modules())

        def conv(x: Tensor, name: str) -> Tensor:
            weight, bias = folded[name]
            c = modules[name]
            return F.conv2d(x, weight, bias, c.stride, c.padding, c.dilation, c.groups)

        x = self.maxpool(F.relu_(conv(frames.contiguous(memory_format=self.memory_format), "conv1")))
        for layer in self.layer_names:
            for index, block in enumerate(getattr(self, layer)):
                prefix = f"{layer}.{index}."
                convs = [prefix + c for c in ("conv1", "conv2", "conv3") if hasattr(block, c)]
                out = x
                for name in convs[:-1]:
                    out = F.relu_(conv(out, name))
                out = conv(out, convs[-1])
                out += x if block.downsample is None else conv(x, prefix + "downsample.0")
                x = F.relu_(out)
        return x.contiguous()

    def forward(self, frames: Tensor) -> Tensor:
        if not self.fold_batchnorm:
            trunk: Any = self._trunk
        else:
            folded = self._folded_weights()  # once per call, shared by the chunks (and their recomputations)

            def trunk(part: Tensor) -> Tensor:
                return self._folded_forward(part, folded)

        if self.checkpoint_frames > 0 and torch.is_grad_enabled():
            return _checkpointed_chunks(trunk, frames, self.checkpoint_frames)
        return _run_in_chunks(trunk, frames, self.frame_chunk)


def coordinate_channels(n: int, h: int, w: int, like: Tensor) -> Tensor:
    """(n, 2, h, w): each cell's centre (x, y) as a fraction of the (padded) frame, the frame in which the head's
    boxes are normalised."""
    ys = (torch.arange(h, device=like.device, dtype=like.dtype) + 0.5) / h
    xs = (torch.arange(w, device=like.device, dtype=like.dtype) + 0.5) / w
    grid = torch.stack([xs[None, :].expand(h, w), ys[:, None].expand(h, w)])
    return grid[None].expand(n, 2, h, w)


class SmallConvNet(nn.Module):
    """A trainable CNN of stride-2 3x3 conv + BatchNorm + ReLU blocks: stride 2**len(channels).

    Input (N, 3, H, W) float; output (N, channels[-1] (+ 2 with `coord_channels`), ceil(H/stride),
    ceil(W/stride)), the same grid as a ResNet or Video Swin of that stride.

    `coord_channels` appends each cell's (x, y) to its features (CoordConv, Liu et al. 2018). Why: the head's box
    MLP reads a box from attended feature *values*, and the release adds position to queries and keys only, so the
    values must carry where they are. A ResNet-101 learns that through zero padding over a receptive field as
    large as the frame; four 3x3 stride-2 blocks see 31 px, so without the channels no cell of a 96x128 frame
    knows its place and the boxes stay at the constant-box loss (see the README's "Training the default").
    """

    def __init__(
        self,
        channels: tuple[int, ...] | list[int] = (16, 32, 64, 64),
        frame_chunk: int = 0,
        coord_channels: bool = False,
    ) -> None:
        super().__init__()
        if not channels:
            raise ValueError("small_cnn channels: need at least one block")
        blocks: list[nn.Module] = []
        in_ch = 3
        for out_ch in channels:
            blocks += [
                nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(out_ch),
                nn.ReLU(inplace=True),
            ]
            in_ch = out_ch
        self.body = nn.Sequential(*blocks)
        self.coord_channels = coord_channels
        self.out_channels = in_ch + (2 if coord_channels else 0)
        self.stride = 2 ** len(channels)
        self.frame_chunk = frame_chunk

    def forward(self, frames: Tensor) -> Tensor:
        features = _run_in_chunks(self.body, frames, self.frame_chunk)
        if not self.coord_channels:
            return features
        n, _, h, w = features.shape
        return torch.cat([features, coordinate_channels(n, h, w, features)], dim=1)


def build_appearance(cfg: dict[str, Any], where: str = "params.yaml:model.backbones.appearance") -> nn.Module:
    """Build from a params section: {name, last_layer, trainable, frame_chunk, channels_last, fold_batchnorm} or
    {name: small_cnn, channels, frame_chunk, coord_channels}; unknown keys are an error naming `where`."""
    cfg = dict(cfg)
    name = cfg.pop("name", None)
    if name == "small_cnn":
        allowed = {"channels", "frame_chunk", "coord_channels"}
    else:
        allowed = {"last_layer", "trainable", "frame_chunk", "channels_last", "fold_batchnorm"}
    unknown = sorted(set(cfg) - allowed)
    if unknown:
        raise KeyError(f"{where}: unknown keys {unknown} for name={name!r} (known: {sorted(allowed)})")
    if name == "small_cnn":
        return SmallConvNet(**cfg)
    return ResNetTrunk(name, **cfg)
