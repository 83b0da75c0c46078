"""Evaluation: predicted tubes for a split under a test protocol, scored with `metrics.STVGMetrics`.

Per batch of the evaluation loader, the model runs once per pass ("two_pass", the release: the frames `[k::2]` of
the 2x dense sampling, each pass with its own cached motion features; "single_pass": all sampled frames once),
driven by `cgstvg.evaluation.protocol.predict_passes`, the code that also drives `cgstvg ground`. Each pass is
post-processed (`protocol.pass_predictions`: segment = best start < end pair, boxes in original pixels, clamped at
0 as the release) and the passes of a video are merged by `protocol.merge_passes` (boxes pooled and linearly
interpolated to every original frame, segment = [min start, max end)).

Ground truth comes from the normalized table (every frame of the tube has a box there; the shards keep only the
sampled frames). Under DDP each rank predicts its own shards; the metric states are gathered by torchmetrics and the
prediction rows by `all_gather_objects`, so every rank returns the same result as a single process would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Iterable, Iterator, Mapping

import numpy as np
import torch

from cgstvg.data.collate import padding_mask
from cgstvg.engine.batch_model import BatchModel
from cgstvg.engine.distributed import DistEnv, all_gather_objects
from cgstvg.evaluation.baselines import BASELINES, baseline_prediction, mean_relative_size
from cgstvg.evaluation.metrics import MetricProtocol, OnMissing, STVGMetrics, score_video
from cgstvg.evaluation.protocol import (
    TEST_PROTOCOLS,
    PassPrediction,
    TubePrediction,
    pass_predictions,
    predict_passes,
)


@dataclasses.dataclass(frozen=True)
class GroundTruth:
    """One sample's GT from the normalized table: inclusive tube, one xyxy pixel box per tube frame."""

    sample_id: str
    qtype: str
    tube: tuple[int, int]
    boxes: np.ndarray  # (tube_end - tube_start + 1, 4)
    segment: tuple[int, int]  # usable clip, inclusive
    size_wh: tuple[int, int]

    @classmethod
    def from_row(cls, row: Mapping) -> GroundTruth:
        return cls(
            sample_id=row["sample_id"],
            qtype=row["qtype"],
            tube=(row["tube_start"], row["tube_end"]),
            boxes=np.asarray(row["boxes"], dtype=np.float64).reshape(-1, 4),
            segment=(row["segment_start"], row["segment_end"]),
            size_wh=(row["width"], row["height"]),
        )


def _pad_ids(ids: list[torch.Tensor], t: int) -> torch.Tensor:
    out = torch.zeros(len(ids), t, dtype=torch.long)
    for i, x in enumerate(ids):
        out[i, : len(x)] = x
    return out


def _predict_pass(model: BatchModel, batch: dict, autocast, k: int, num_passes: int) -> list[PassPrediction]:
    """Pass k of `num_passes` on an evaluation batch, post-processed into one PassPrediction per video."""
    with autocast:
        out = model(batch, pass_index=k, num_passes=num_passes)
    targets = batch["targets"]
    time_mask = padding_mask(batch["time_mask"][:, k::num_passes])
    ids = _pad_ids([t["frame_ids"][k::num_passes] for t in targets], time_mask.shape[1])
    orig = torch.stack([t["orig_size"] for t in targets])
    # Boxes clamped at 0 only, as the release's evaluation (cgstvg.model.postprocess.post_process).
    return pass_predictions(out.pred_sted, out.pred_boxes, ids, orig, time_mask, clip_to_frame=False)[0]


@torch.inference_mode()
def predict(
    model: BatchModel, batches: Iterable[dict], protocol: str, device: torch.device, amp: bool = False
) -> Iterator[tuple[dict, TubePrediction]]:
    """(target dict, merged tube) for every sample of `batches` (the evaluation loader's batches)."""
    if protocol not in TEST_PROTOCOLS:
        raise ValueError(f"evaluate.protocol must be one of {tuple(TEST_PROTOCOLS)}, got {protocol!r}")
    model.eval()
    use_amp = amp and device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_amp else contextlib.nullcontext()
    for batch in batches:
        targets = batch["targets"]
        passes = TEST_PROTOCOLS[protocol]
        if passes > 1 and any(int(t["eval_passes"]) != passes for t in targets):
            found = sorted({int(t["eval_passes"]) for t in targets})
            raise ValueError(
                f"protocol {protocol!r} needs splits sampled for {passes} passes; samples "
                f"{[t['sample_id'] for t in targets][:3]} were sharded for {found} (shard.sampling)"
            )
        num_frames = [int(n) for n in batch["time_mask"].sum(dim=1)]
        run_pass = functools.partial(_predict_pass, model, batch, autocast)
        yield from zip(targets, predict_passes(num_frames, run_pass, protocol))


def _row(sample: dict, gt: GroundTruth, seg: tuple[int, int], frames: np.ndarray, boxes: np.ndarray) -> dict:
    return {
        "sample_id": gt.sample_id,
        "dataset": sample["dataset"],
        "split": sample["split"],
        "video_id": sample["video_id"],
        "qtype": gt.qtype,
        "sentence": sample["sentence"],
        "gt_start": int(gt.tube[0]),
        "gt_end": int(gt.tube[1]),
        "pred_start": int(seg[0]),
        "pred_end": int(seg[1]),
        "box_first_frame": int(frames[0]) if len(frames) else -1,
        "boxes": np.round(np.asarray(boxes, dtype=np.float64), 3).tolist(),
    }


def evaluate_model(
    model: BatchModel,
    batches: Iterable[dict],
    gt: Mapping[str, GroundTruth],
    env: DistEnv,
    *,
    protocol: str,
    metric_protocol: MetricProtocol,
    on_missing: OnMissing,
    per_qtype: bool,
    amp: bool = False,
) -> tuple[dict[str, float], list[dict]]:
    """Metrics and per-sample rows (sorted by sample_id, on every rank) of the model on one split.

    gt: sample_id -> GroundTruth for every sample of the split; its sorted order gives the metric indices.
    Rows hold the prediction (pred_start, pred_end exclusive, boxes from box_first_frame on) and tIoU, vIoU,
    gt_vIoU.
    """
    order = {sid: i for i, sid in enumerate(sorted(gt))}
    metric = STVGMetrics(protocol=metric_protocol, on_missing=on_missing, per_qtype=per_qtype).to(
        env.device if env.device.type == "cuda" else "cpu"
    )
    rows = []
    for sample, tube in predict(model, batches, protocol, env.device, amp):
        sid = sample["sample_id"]
        if sid not in gt:
            raise KeyError(f"sample {sid!r} of the shards is not in the normalized table of its split")
        g = gt[sid]
        frames, boxes = tube.frame_ids.numpy(), tube.boxes.numpy()
        metric.update(g.tube, g.boxes, tube.segment, frames, boxes, index=order[sid], qtype=g.qtype, sample_id=sid)
        scores = score_video(
            g.tube, g.boxes, tube.segment, frames, boxes, protocol=metric_protocol, on_missing=on_missing, sample_id=sid
        )
        rows.append(
            _row(sample, g, tube.segment, frames, boxes)
            | {"tIoU": scores.tiou, "vIoU": scores.viou, "gt_vIoU": scores.gt_viou}
        )
    summary = {k: float(v) for k, v in metric.compute().items()}
    rows = sorted((r for part in all_gather_objects(rows) for r in part), key=lambda r: r["sample_id"])
    if len(rows) != len(gt):
        missing = sorted(set(gt) - {r["sample_id"] for r in rows})[:5]
        raise RuntimeError(
            f"evaluated {len(rows)} of {len(gt)} samples (missing e.g. {missing}): the shards and the "
            "normalized table disagree (rerun `shard`)"
        )
    return summary, rows


def evaluate_baselines(
    gt: Mapping[str, GroundTruth],
    train_gt: Iterable[GroundTruth],
    *,
    metric_protocol: MetricProtocol,
    on_missing: OnMissing,
    per_qtype: bool,
) -> dict[str, dict[str, float]]:
    """Metrics of each trivial baseline (`cgstvg.evaluation.baselines`); the box size is the training mean."""
    train_gt = list(train_gt)
    rel = mean_relative_size(
        [g.boxes for g in train_gt], [g.size_wh[0] for g in train_gt], [g.size_wh[1] for g in train_gt]
    )
    out = {}
    for kind in BASELINES:
        metric = STVGMetrics(
            protocol=metric_protocol, on_missing=on_missing, per_qtype=per_qtype, sync_on_compute=False
        )
        for i, sid in enumerate(sorted(gt)):
            g = gt[sid]
            seg, frames, boxes = baseline_prediction(
                kind,
                segment_start=g.segment[0],
                segment_end=g.segment[1],
                tube_start=g.tube[0],
                tube_end=g.tube[1],
                width=g.size_wh[0],
                height=g.size_wh[1],
                rel_size=rel,
            )
            metric.update(g.tube, g.boxes, seg, frames, boxes, index=i, qtype=g.qtype, sample_id=sid)
        out[kind] = {k: float(v) for k, v in metric.compute().items()}
    return out


__all__ = ["GroundTruth", "evaluate_baselines", "evaluate_model", "predict"]
