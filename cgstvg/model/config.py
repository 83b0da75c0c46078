"""Every dimension and switch of the CG-STVG grounding head, in one dataclass.

The defaults are the authors' release (experiments/hcstvg.yaml: d = 256, 8 heads, FFN 2048, 6 encoder and 6
decoder layers). `params.yaml` (section `model:`) overrides them with a small CPU configuration; build a config
from that section with `CGSTVGConfig.from_params`.

Switches that differ between the paper and the release (the release is the default, because the released
checkpoints were produced by it):

* `icg_pooling`  'mean' (release: box mean-pool on the feature grid after round/ceil) or 'roi_align' (paper).
* `context_mode` which frames give instance context (paper Table 4):
    'none'     the paper's baseline: no ICG and no ICR (no context, no confidence heads, no loss_conf);
    'all'      ICG without ICR: every real frame gives context;
    'temporal' ICR with the temporal filter only (s_t > theta_t);
    'spatial'  ICR with the spatial filter only (s_s > theta_s);
    'both'     ICR with both filters (the full model, and the release).
* `score_fusion` how 'both' combines the two scores (paper Table 6):
    'two_level' (s_t > theta_t) and (s_s > theta_s)           -- the paper's and the release's rule;
    'sum'       s_t + s_s > theta_t + theta_s                 -- "one-level with s_t + s_s";
    'product'   s_t * s_s > theta_t * theta_s                 -- "one-level with s_t x s_s".
  The paper does not give the fused thresholds; these are our reading (the fused rule accepts exactly the frames
  the two-level rule accepts when both scores sit at their thresholds).
* `threshold_mode` what the thresholds are compared with:
    'release' s_t = the raw actioness logit, s_s = sigmoid(conf_a) + sigmoid(conf_m) in [0, 2];
    'paper'   s_t = sigmoid(actioness logit), s_s = (sigmoid(conf_a) + sigmoid(conf_m)) / 2, both in [0, 1].
* `temporal_score_layer` 'last' (release: the actioness of the LAST temporal layer scores every stage) or
  'stage' (paper: stage k uses its own temporal query P_k).
* `train_selection` which frames give context when `targets` are passed to the forward (training):
    'gt_giou'    release: GT frames whose detached predicted box has GIoU with the GT box > theta_s_gt
                 (the score is 0 on non-GT frames, so a negative theta_s_gt selects those as well);
    'confidence' paper: the same rule as at inference.
* `context_in_temporal` also feed the context to the temporal decoding blocks (paper Table 7; the stages are then
  interleaved and `temporal_score_layer` must be 'stage').

Training-speed switches for small CPU runs (off in the release; see the README's "Training the default"):
* `query_init` what the spatial and temporal queries start from:
    'zeros' release: Q^0 = P^0 = 0 ("initialized following DETR"), so the first stage's queries do not know the
            sentence and must learn it through the memory;
    'text'  a linear map of the sentence as the encoder saw it (the memory's text tokens, mean-pooled over tokens
            and real frames), one per decoder; the release computes a similar unused `content_query` (STCAT's).
* `box_refine` how a stage's box relates to its anchor:
    'absolute' release: box = sigmoid(MLP(Q_k)), the anchor only steers the cross-attention;
    'anchor'   STCAT / DAB-DETR: box = sigmoid(MLP(Q_k) + logit(anchor)), each stage refines the previous box.

Release behaviours that we keep by default because they change outputs, each with a switch for the fix:
* `spatial_key_padding_mask` False: the spatial cross-attention attends padded cells and padded text tokens.
* `frames_cls_over_padding` True: the per-frame mean that initialises the anchors includes padded tokens.
* `dropout_on_logits` True: the temporal, actioness and confidence MLPs apply dropout after their last layer.
Release behaviours that are not switches: post-norm layers everywhere, zero position for text and motion tokens in
the decoders, conf = sigmoid + sigmoid used as a logit in loss_conf, detached anchors, `vis_mask[:, 0, 0]` forced
False (so that no frame's key set is empty).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

ICG_POOLING = ("mean", "roi_align")
CONTEXT_MODES = ("none", "all", "temporal", "spatial", "both")
SCORE_FUSIONS = ("two_level", "sum", "product")
THRESHOLD_MODES = ("release", "paper")
TEMPORAL_SCORE_LAYERS = ("last", "stage")
TRAIN_SELECTIONS = ("gt_giou", "confidence")
QUERY_INITS = ("zeros", "text")
BOX_REFINES = ("absolute", "anchor")


@dataclass(frozen=True)
class CGSTVGConfig:
    """Dimensions and switches of the grounding head (see the module docstring for the switches)."""

    # Input widths (backbone outputs).
    appearance_dim: int = 2048  # ResNet-101 layer4 channels (C_a)
    motion_dim: int = 768  # Video Swin-T stage-4 channels (C_m); the release hard-codes 768
    text_dim: int = 768  # RoBERTa-base hidden size (C_t)

    # Transformer sizes.
    d_model: int = 256  # MODEL.CG.HIDDEN; the release hard-codes 256 in pos_fc and ca2, we follow d_model
    heads: int = 8  # MODEL.CG.HEADS: encoder, both decoders and the spatial cross-attention
    ffn_dim: int = 2048  # MODEL.CG.FFN_DIM
    enc_layers: int = 6  # MODEL.CG.ENC_LAYERS (the used `spatial_layers`)
    dec_layers: int = 6  # MODEL.CG.DEC_LAYERS: temporal and spatial decoder alike (K decoding stages)
    context_heads: int = 8  # heads of the context cross-attention (release `ca2`: always 8)
    context_ffn_dim: int = 256  # intermediate size of the context cross-attention block (release: always 256)
    max_video_len: int = 200  # INPUT.MAX_VIDEO_LEN; the sine time table has max_video_len + 1 rows

    # Regularisation (all dropouts; set both to 0 for deterministic training-mode checks).
    dropout: float = 0.1  # attention/FFN dropout, text resizer, anchor initialiser, context block
    head_dropout: float = 0.3  # temporal (start/end), actioness and confidence MLP heads
    dropout_on_logits: bool = True  # release: heads drop out after their last layer too

    # ICG / ICR switches.
    icg_pooling: str = "mean"
    roi_align_output_size: int = 2  # bins per side for 'roi_align' (then averaged to one vector)
    roi_align_sampling_ratio: int = 2
    context_mode: str = "both"
    score_fusion: str = "two_level"
    threshold_mode: str = "release"
    theta_t: float = 0.5  # MODEL.CG.TEMP_THETA (release hcstvg 0.5; paper 0.7 on probabilities)
    theta_s: float = 0.8  # MODEL.CG.SPAT_THETA (release hcstvg 0.8; paper 0.8)
    theta_s_gt: float = 0.8  # MODEL.CG.SPAT_GT_THETA: GIoU threshold of 'gt_giou' training selection
    temporal_score_layer: str = "last"
    train_selection: str = "gt_giou"
    context_in_temporal: bool = False

    # Training-speed switches (release: 'zeros', 'absolute').
    query_init: str = "zeros"
    box_refine: str = "absolute"

    # Release padding behaviours.
    spatial_key_padding_mask: bool = False
    frames_cls_over_padding: bool = True

    def __post_init__(self) -> None:
        choices = {
            "icg_pooling": ICG_POOLING,
            "context_mode": CONTEXT_MODES,
            "score_fusion": SCORE_FUSIONS,
            "threshold_mode": THRESHOLD_MODES,
            "temporal_score_layer": TEMPORAL_SCORE_LAYERS,
            "train_selection": TRAIN_SELECTIONS,
            "query_init": QUERY_INITS,
            "box_refine": BOX_REFINES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"CGSTVGConfig.{name}={getattr(self, name)!r}: expected one of {allowed}")
        if self.d_model % 2 or self.d_model % self.heads or self.d_model % self.context_heads:
            raise ValueError(
                f"CGSTVGConfig: d_model={self.d_model} must be even and divisible by heads={self.heads} "
                f"and context_heads={self.context_heads}"
            )
        if self.dec_layers < 1 or self.enc_layers < 1:
            raise ValueError(f"CGSTVGConfig: need at least one encoder and one decoder layer, got {self}")
        if self.context_in_temporal and self.temporal_score_layer != "stage":
            raise ValueError(
                "CGSTVGConfig: context_in_temporal interleaves the temporal and spatial stages, so the last "
                "temporal layer is not known when stage k selects frames; set temporal_score_layer='stage'"
            )
        if self.context_in_temporal and self.context_mode == "none":
            raise ValueError("CGSTVGConfig: context_in_temporal needs context (context_mode != 'none')")

    @property
    def uses_context(self) -> bool:
        return self.context_mode != "none"

    @classmethod
    def from_params(cls, section: dict[str, Any], where: str = "params.yaml:model") -> CGSTVGConfig:
        """Build from a `params.yaml` section; unknown keys are an error that names the section."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise KeyError(f"{where}: unknown model keys {unknown} (known: {sorted(known)})")
        return cls(**section)

    def replace(self, **changes: Any) -> CGSTVGConfig:
        return dataclasses.replace(self, **changes)


RELEASE_CONFIG = CGSTVGConfig()
"""The authors' hcstvg.yaml head (the sizes of the released checkpoints)."""
