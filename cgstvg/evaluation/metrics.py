"""Spatio-temporal video grounding metrics: m_tIoU, m_vIoU, vIoU@R and gt_vIoU, per video and as torchmetrics.

Conventions (those of the normalized schema and the release's post-processor):
- the GT tube is `gt_segment = (gs, ge)` with BOTH ends inclusive and one xyxy box per frame gs..ge;
- the predicted segment is `pred_segment = (ps, pe)` with `pe` EXCLUSIVE (the post-processor emits
  `[frame_ids[s], frame_ids[e] + 1]`), and predicted boxes are given at `pred_frames` (sorted original frame ids);
- boxes are xyxy in original pixels; IoU uses no "+1" (a box [x1, x2] is x2 - x1 pixels wide).

Two metric protocols (`METRIC_PROTOCOLS`, params `evaluate.metric_protocol`):
- ``"release"`` reproduces the authors' evaluators (HC-STVG and VidSTG, identical formulas) exactly, quirks
  included: the inclusive GT end is used as if it were exclusive, so the GT length counts one frame short
  (tIoU = I / ((ge - gs) + (pe - ps) - I), I = min(ge, pe) - max(gs, ps)) and the last GT frame never lies in the
  intersection [max(gs, ps), min(ge, pe)) that vIoU sums over; the union is [min(gs, ps), max(ge, pe)).
  A perfect prediction (ps, pe) = (gs, ge + 1) therefore scores tIoU = vIoU = (ge - gs) / (ge - gs + 1), and a
  one-frame GT always scores 0.
- ``"strict"`` fixes only that off-by-one: the GT end becomes ge + 1 (exclusive) everywhere, so the perfect
  prediction scores exactly 1.

Both protocols: vIoU = sum of IoU over GT frames in the intersection that have a predicted box, divided by the
number of frames in the union (at least 1); gt_vIoU = mean IoU over all GT frames, a frame without prediction
counting 0 (the spatial-only score, "m_sIoU"-like); vIoU@R counts vIoU > R (strict: a vIoU of exactly 0.5 does not
pass @0.5). A frame where the predicted and the GT box both have zero area gives IoU 0/0 = NaN, which propagates to
the video's vIoU / gt_vIoU and to the means (and fails every threshold), as in the release.
A GT frame without a predicted box is skipped by the HC-STVG evaluator (`on_missing="skip"`) and is an error for
the VidSTG evaluator (`on_missing="raise"`, see `RELEASE_ON_MISSING`).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from cgstvg.data.schema import QTYPES

MetricProtocol = Literal["release", "strict"]
OnMissing = Literal["skip", "raise"]
# How a prediction is scored (`evaluate.metric_protocol`); not the test protocols of cgstvg.evaluation.protocol.
METRIC_PROTOCOLS = ("release", "strict")
ON_MISSING = ("skip", "raise")
# What the authors' evaluator of each dataset does with a GT frame that has no predicted box.
RELEASE_ON_MISSING: dict[str, OnMissing] = {"hcstvg_v1": "skip", "hcstvg_v2": "skip", "vidstg": "raise"}
IOU_THRESHOLDS = (0.3, 0.5)


class MissingPredictionError(RuntimeError):
    """A GT frame has no predicted box and `on_missing="raise"` (the VidSTG evaluator's behaviour)."""


class VideoScores(NamedTuple):
    """One video's scores (NaN where a frame had two zero-area boxes)."""

    tiou: float
    viou: float
    gt_viou: float


def _numpy(x, dtype) -> np.ndarray:
    """Array-like or tensor (any device) -> numpy array of `dtype`."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
    return np.asarray(x, dtype=dtype)


def _check(value: str, allowed: tuple[str, ...], name: str) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def _gt_end_exclusive(gt_segment, protocol: MetricProtocol) -> tuple[int, int]:
    """(gs, end) where `end` is what the formulas use as the exclusive GT end under `protocol`."""
    _check(protocol, METRIC_PROTOCOLS, "protocol")
    gs, ge = int(gt_segment[0]), int(gt_segment[1])
    return gs, ge + 1 if protocol == "strict" else ge


def tiou(gt_segment, pred_segment, *, protocol: MetricProtocol = "release") -> float:
    """Temporal IoU of an inclusive GT segment (gs, ge) and an end-exclusive predicted segment (ps, pe)."""
    gs, ge = _gt_end_exclusive(gt_segment, protocol)
    ps, pe = int(pred_segment[0]), int(pred_segment[1])
    inter = min(ge, pe) - max(gs, ps)
    if inter <= 0:
        return 0.0
    return inter / ((ge - gs) + (pe - ps) - inter)


def paired_box_iou(boxes1, boxes2) -> np.ndarray:
    """IoU of boxes1[i] with boxes2[i]: (N, 4) xyxy pixels each -> (N,) float64, no +1 convention.

    torchvision.ops.box_iou computes the full N x M matrix; a video needs only the N frame-aligned pairs, so this
    is the diagonal of the same formula (inter / (area1 + area2 - inter), same operation order), in float64 so
    that it equals the release's numpy evaluator bit for bit. Two zero-area boxes give 0/0 = NaN, as there.
    """
    b1 = _numpy(boxes1, np.float64).reshape(-1, 4)
    b2 = _numpy(boxes2, np.float64).reshape(-1, 4)
    area1 = (b1[:, 2] - b1[:, 0]) * (b1[:, 3] - b1[:, 1])
    area2 = (b2[:, 2] - b2[:, 0]) * (b2[:, 3] - b2[:, 1])
    wh = np.clip(np.minimum(b1[:, 2:], b2[:, 2:]) - np.maximum(b1[:, :2], b2[:, :2]), 0, None)
    inter = wh[:, 0] * wh[:, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / (area1 + area2 - inter)


def _sequential_sum(values: np.ndarray) -> float:
    # The release adds frame IoUs one by one in frame order; np.add.accumulate keeps that order (np.sum would
    # add pairwise), so per-video scores match the release exactly, not just to 1e-16.
    return float(np.add.accumulate(values)[-1]) if values.size else 0.0


def score_video(
    gt_segment,
    gt_boxes,
    pred_segment,
    pred_frames,
    pred_boxes,
    *,
    protocol: MetricProtocol = "release",
    on_missing: OnMissing = "skip",
    sample_id: str | int | None = None,
) -> VideoScores:
    """tIoU, vIoU and gt_vIoU of one video (see the module docstring for the definitions).

    gt_segment: (gs, ge), both inclusive original frame ids. gt_boxes: (ge - gs + 1, 4) xyxy pixels, one per frame.
    pred_segment: (ps, pe), pe exclusive. pred_frames: (M,) strictly increasing original frame ids.
    pred_boxes: (M, 4) xyxy pixels at those frames (typically every frame between the first and last sampled one,
    see `cgstvg.evaluation.interpolate`). `sample_id` only names the record in error messages.
    """
    _check(on_missing, ON_MISSING, "on_missing")
    where = f"sample {sample_id}: " if sample_id is not None else ""
    gs, ge = int(gt_segment[0]), int(gt_segment[1])
    gt_boxes = _numpy(gt_boxes, np.float64)
    if ge < gs or gt_boxes.shape != (ge - gs + 1, 4):
        raise ValueError(
            f"{where}GT segment ({gs}, {ge}) (inclusive) needs {ge - gs + 1} boxes of shape (N, 4), "
            f"got an array of shape {gt_boxes.shape}"
        )
    pred_frames = _numpy(pred_frames, np.int64).reshape(-1)
    pred_boxes = _numpy(pred_boxes, np.float64)
    if pred_boxes.shape != (pred_frames.size, 4):
        raise ValueError(
            f"{where}{pred_frames.size} predicted frame ids need boxes of shape ({pred_frames.size}, 4), "
            f"got {pred_boxes.shape}"
        )
    if pred_frames.size > 1 and np.any(np.diff(pred_frames) <= 0):
        raise ValueError(f"{where}predicted frame ids must be strictly increasing")

    t = tiou((gs, ge), pred_segment, protocol=protocol)
    _, gt_end = _gt_end_exclusive((gs, ge), protocol)
    ps, pe = int(pred_segment[0]), int(pred_segment[1])
    union = max(max(gt_end, pe) - min(gs, ps), 1)
    inter_start, inter_end = max(gs, ps), min(gt_end, pe)

    frames = np.arange(gs, ge + 1)
    pos = np.clip(np.searchsorted(pred_frames, frames), 0, max(pred_frames.size - 1, 0))
    has_pred = pred_frames[pos] == frames if pred_frames.size else np.zeros(frames.size, dtype=bool)
    if on_missing == "raise" and not has_pred.all():
        missing = frames[~has_pred]
        covered = f"{pred_frames[0]}..{pred_frames[-1]}" if pred_frames.size else "none"
        raise MissingPredictionError(
            f"{where}no predicted box for GT frame(s) {missing[:5].tolist()}"
            f"{' ...' if missing.size > 5 else ''} (GT {gs}..{ge}, predicted boxes cover {covered}); "
            "the VidSTG evaluator needs one for every GT frame. Pass on_missing='skip' to score them as 0 "
            "like the HC-STVG evaluator."
        )
    ious = paired_box_iou(pred_boxes[pos[has_pred]], gt_boxes[has_pred])
    in_inter = (frames[has_pred] >= inter_start) & (frames[has_pred] < inter_end)
    viou = _sequential_sum(ious[in_inter]) / union
    gt_viou = _sequential_sum(ious) / max(frames.size, 1)
    return VideoScores(t, viou, gt_viou)


def viou(
    gt_segment,
    gt_boxes,
    pred_segment,
    pred_frames,
    pred_boxes,
    *,
    protocol: MetricProtocol = "release",
    on_missing: OnMissing = "skip",
) -> float:
    """vIoU of one video; arguments as in `score_video`."""
    return score_video(
        gt_segment, gt_boxes, pred_segment, pred_frames, pred_boxes, protocol=protocol, on_missing=on_missing
    ).viou


def _mean_in_order(values: torch.Tensor) -> torch.Tensor:
    """Mean of a (N,) float64 tensor, summed one by one in index order like the release's summary, so that the
    summaries equal the release's exactly; NaN for N = 0."""
    total = _sequential_sum(values.detach().cpu().numpy()) if values.numel() else float("nan")
    return torch.tensor(total / max(values.numel(), 1), dtype=torch.float64, device=values.device)


class STVGMetrics(Metric):
    """m_tIoU, m_vIoU, vIoU@R, gt_vIoU (and gt_vIoU@R) over videos, overall and per VidSTG qtype; DDP-safe.

    Call `update` once per video with the arguments of `score_video` plus the sample's `index` (its position in
    the evaluated split) and `qtype`. States are per-sample `cat` lists, so `compute` (after the DDP gather)
    drops duplicated indices (a padded DistributedSampler repeats samples) and sorts by index: the summary is
    the same, bit for bit, whatever the number of processes. Means are plain means over videos (summed in index
    order, as the release sums them in its sample order), each qtype by its own count, as in the release.

    `compute()` returns float64 scalars: `m_tIoU`, `m_vIoU`, `vIoU@R`, `gt_vIoU`, `gt_vIoU@R`, `n` and, with
    `per_qtype=True`, the same keys prefixed with `declar_` / `inter_` for each qtype that has samples.
    `per_sample()` returns the per-video values (index, qtype, tIoU, vIoU, gt_vIoU) for a predictions table.
    Under DDP give every rank at least one sample (DistributedSampler does, by padding).
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True
    # the `cat` list states (add_state in __init__)
    index: list[torch.Tensor]
    qtype: list[torch.Tensor]
    tiou: list[torch.Tensor]
    viou: list[torch.Tensor]
    gt_viou: list[torch.Tensor]

    def __init__(
        self,
        *,
        protocol: MetricProtocol = "release",
        on_missing: OnMissing = "skip",
        per_qtype: bool = False,
        iou_thresholds: tuple[float, ...] = IOU_THRESHOLDS,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        _check(protocol, METRIC_PROTOCOLS, "protocol")
        _check(on_missing, ON_MISSING, "on_missing")
        self.protocol = protocol
        self.on_missing = on_missing
        self.per_qtype = per_qtype
        self.iou_thresholds = tuple(float(r) for r in iou_thresholds)
        for name in ("index", "qtype", "tiou", "viou", "gt_viou"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(
        self,
        gt_segment,
        gt_boxes,
        pred_segment,
        pred_frames,
        pred_boxes,
        *,
        index: int,
        qtype: str = "declar",
        sample_id: str | int | None = None,
    ) -> None:
        """Score one video (see `score_video`) and store its values under `index` (a unique int >= 0)."""
        if qtype not in QTYPES:
            raise ValueError(
                f"sample {sample_id if sample_id is not None else index}: qtype must be one of {QTYPES}, got {qtype!r}"
            )
        if int(index) < 0:
            raise ValueError(f"sample {sample_id}: index must be >= 0, got {index}")
        scores = score_video(
            gt_segment,
            gt_boxes,
            pred_segment,
            pred_frames,
            pred_boxes,
            protocol=self.protocol,
            on_missing=self.on_missing,
            sample_id=sample_id if sample_id is not None else index,
        )
        self.index.append(torch.tensor([int(index)], dtype=torch.int64, device=self.device))
        self.qtype.append(torch.tensor([QTYPES.index(qtype)], dtype=torch.int64, device=self.device))
        for name, value in zip(("tiou", "viou", "gt_viou"), scores):
            getattr(self, name).append(torch.tensor([value], dtype=torch.float64, device=self.device))

    def per_sample(self) -> dict[str, torch.Tensor]:
        """Per-video values, unique and sorted by index: `index`, `qtype` (position in QTYPES), `tiou`, `viou`,
        `gt_viou`, each (N,). Under DDP every rank gets the values gathered from all ranks."""
        if self._is_synced or not self.sync_on_compute:
            return self._unique_sorted()
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, process_group=self.process_group):
            return self._unique_sorted()

    def _unique_sorted(self) -> dict[str, torch.Tensor]:
        names = ("index", "qtype", "tiou", "viou", "gt_viou")
        # Before a sync the states are lists of (1,) tensors; after it, one gathered tensor each.
        if isinstance(self.index, list) and not self.index:
            return {n: torch.zeros(0, dtype=torch.int64 if n in ("index", "qtype") else torch.float64) for n in names}
        values = {n: dim_zero_cat(getattr(self, n)) for n in names}
        values["index"], values["qtype"] = values["index"].long(), values["qtype"].long()
        order = torch.argsort(values["index"], stable=True)
        keep = torch.ones_like(order, dtype=torch.bool)
        keep[1:] = values["index"][order][1:] != values["index"][order][:-1]  # first occurrence of each index
        order = order[keep]
        return {n: v[order] for n, v in values.items()}

    def compute(self) -> dict[str, torch.Tensor]:
        values = self._unique_sorted()  # compute() has already gathered the states
        groups = {"": torch.ones_like(values["qtype"], dtype=torch.bool)}
        if self.per_qtype:
            groups.update({f"{q}_": values["qtype"] == i for i, q in enumerate(QTYPES)})
        out: dict[str, torch.Tensor] = {}
        for prefix, mask in groups.items():
            n = int(mask.sum())
            if prefix and n == 0:
                continue
            tiou_, viou_, gt_viou_ = (values[k][mask] for k in ("tiou", "viou", "gt_viou"))
            out[f"{prefix}m_tIoU"] = _mean_in_order(tiou_)
            out[f"{prefix}m_vIoU"] = _mean_in_order(viou_)
            for r in self.iou_thresholds:
                out[f"{prefix}vIoU@{r:g}"] = _mean_in_order((viou_ > r).double())
            out[f"{prefix}gt_vIoU"] = _mean_in_order(gt_viou_)
            for r in self.iou_thresholds:
                out[f"{prefix}gt_vIoU@{r:g}"] = _mean_in_order((gt_viou_ > r).double())
            out[f"{prefix}n"] = torch.tensor(float(n), dtype=torch.float64, device=tiou_.device)
        return out


__all__ = [
    "IOU_THRESHOLDS",
    "ON_MISSING",
    "METRIC_PROTOCOLS",
    "RELEASE_ON_MISSING",
    "MissingPredictionError",
    "STVGMetrics",
    "VideoScores",
    "paired_box_iou",
    "score_video",
    "tiou",
    "viou",
]
