"""The full CG-STVG model: the three backbones and the grounding head.

Attribute names fix the state-dict prefixes: `appearance.*` (2-D CNN), `motion.*` (Video Swin), `text.*`
(RoBERTa + tokenizer), `head.*` (`CGSTVGHead`). `cgstvg.model.convert.convert_official_state_dict` maps the
release's checkpoints onto them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from cgstvg.model.appearance import build_appearance, downsample_mask
from cgstvg.model.config import CGSTVGConfig
from cgstvg.model.head import CGSTVGHead, CGSTVGOutput
from cgstvg.model.motion import build_motion
from cgstvg.model.targets import GroundingTargets
from cgstvg.model.text import build_text

__all__ = ["CGSTVG", "CGSTVGHead", "CGSTVGOutput", "build_cgstvg", "head_config"]

# Sub-sections of params.yaml `model:` that are not head settings.
NON_HEAD_KEYS = ("backbones", "loss", "init")


class CGSTVG(nn.Module):
    """Backbones + head.

    Args:
        appearance: per-frame 2-D CNN, (N, 3, H, W) -> (N, C_a, H', W'), with `out_channels`.
        motion: video backbone, ((N, 3, H, W), num_frames) -> (N, C_m, H', W'), with `out_channels`.
        text: sentences -> (features (B, L, C_t), pad mask (B, L)), with `out_channels`.
        head_cfg: head settings; its input widths are replaced by the backbones' `out_channels`.
    """

    def __init__(self, appearance: nn.Module, motion: nn.Module, text: nn.Module, head_cfg: CGSTVGConfig):
        super().__init__()
        self.appearance = appearance
        self.motion = motion
        self.text = text
        self.head = CGSTVGHead(
            head_cfg.replace(
                appearance_dim=appearance.out_channels, motion_dim=motion.out_channels, text_dim=text.out_channels
            )
        )

    def forward(
        self,
        frames: Tensor,
        sentences: Sequence[str],
        pixel_mask: Tensor | None = None,
        time_mask: Tensor | None = None,
        targets: GroundingTargets | None = None,
        return_intermediates: bool = False,
    ) -> CGSTVGOutput:
        """
        Args:
            frames: (B, T, 3, H, W) ImageNet-normalised RGB; videos padded to T frames and to H x W pixels.
            sentences: B strings.
            pixel_mask: (B, T, H, W) bool, True = padded pixel; None = no spatial padding.
            time_mask: (B, T) bool, True = padded frame; None = every frame real.
            targets: GT for ICR's 'gt_giou' training selection (training only).
        Returns:
            CGSTVGOutput of the head (boxes normalised to the padded H x W frame).
        """
        b, t = frames.shape[:2]
        if len(sentences) != b:
            raise ValueError(f"CGSTVG: {b} videos but {len(sentences)} sentences")
        flat = frames.flatten(0, 1)
        app = self.appearance(flat)
        mot = self._motion(frames, time_mask)
        if app.shape[-2:] != mot.shape[-2:]:
            raise ValueError(
                f"CGSTVG: appearance grid {tuple(app.shape[-2:])} and motion grid {tuple(mot.shape[-2:])} differ; "
                "the backbones need the same stride"
            )
        grid = tuple(app.shape[-2:])
        if pixel_mask is None:
            vis_mask = torch.zeros(b * t, *grid, dtype=torch.bool, device=frames.device)
        else:
            vis_mask = downsample_mask(pixel_mask.flatten(0, 1), grid)
        text_hidden, text_mask = self.text(list(sentences))
        return self.head(
            app.unflatten(0, (b, t)),
            vis_mask.unflatten(0, (b, t)),
            mot.unflatten(0, (b, t)),
            text_hidden,
            text_mask,
            time_mask=time_mask,
            targets=targets,
            return_intermediates=return_intermediates,
        )

    def _motion(self, frames: Tensor, time_mask: Tensor | None) -> Tensor:
        """(B*T, C_m, H', W'). The Video Swin attends across frames, so videos with padded frames run one at a
        time on their real frames only (padding would leak into their features); padded frames get zeros."""
        b, t = frames.shape[:2]
        if time_mask is None or not bool(time_mask.any()):
            return self.motion(frames.flatten(0, 1), num_frames=t)
        lengths = (~time_mask).sum(dim=1).tolist()
        outs = []
        for video, n in zip(frames, lengths):
            feat = self.motion(video[:n], num_frames=n)
            outs.append(torch.cat([feat, feat.new_zeros(t - n, *feat.shape[1:])]))
        return torch.cat(outs)


def head_config(model_section: dict[str, Any], where: str = "params.yaml:model") -> CGSTVGConfig:
    """The head settings of a params.yaml `model:` section (its `backbones` and `loss` parts left out)."""
    return CGSTVGConfig.from_params({k: v for k, v in model_section.items() if k not in NON_HEAD_KEYS}, where)


def build_cgstvg(
    model_section: dict[str, Any], tokenizer_dir: str | os.PathLike | None = None, where: str = "params.yaml:model"
) -> CGSTVG:
    """Build the full model from a params.yaml `model:` section (`backbones.{appearance,motion,text}` + head)."""
    backbones = model_section.get("backbones")
    if not isinstance(backbones, dict) or not {"appearance", "motion", "text"} <= set(backbones):
        raise KeyError(f"{where}.backbones: expected the sections appearance, motion and text")
    return CGSTVG(
        build_appearance(backbones["appearance"], f"{where}.backbones.appearance"),
        build_motion(backbones["motion"], f"{where}.backbones.motion"),
        build_text(backbones["text"], tokenizer_dir, f"{where}.backbones.text"),
        head_config(model_section, where),
    )
