"""The test protocols: the release's dense two-pass protocol and a single-pass one, for `evaluate` and `ground`.

The release samples test frames at twice the training rate and runs the model twice, on the even and on the
odd sampled frames (`ids[0::2]`, `ids[1::2]`), so that each pass sees a clip as long as in training. The two
passes are merged: their boxes are pooled and linearly interpolated to every original frame between the first
and the last sampled frame, and the segment is [min(starts), max(ends)). The single-pass protocol runs the
model once on all sampled frames and interpolates the same way.

`predict_passes` drives the protocol for a batch of videos (the evaluation loop) and `run_protocol` for one video
(`cgstvg ground`); both post-process a pass with `pass_predictions`. Apart from that post-processing, everything
here takes plain tensors (frame ids, xyxy pixel boxes, segments in original frame ids), not the model's outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from cgstvg.evaluation.interpolate import interpolate_boxes
from cgstvg.model.postprocess import Tube, post_process

# How the model is run on a test video (`evaluate.protocol`): protocol -> passes. How a prediction is scored is the
# metric protocol (cgstvg.evaluation.metrics.METRIC_PROTOCOLS).
TEST_PROTOCOLS = {"two_pass": 2, "single_pass": 1}


@dataclass(frozen=True)
class PassPrediction:
    """The post-processed output of one pass.

    frame_ids: (T,) original frame ids of the frames the pass saw, strictly increasing.
    boxes: (T, 4) xyxy original pixels, one per frame of the pass.
    segment: (start, end) in original frame ids, end EXCLUSIVE (`[frame_ids[s], frame_ids[e] + 1]`).
    """

    frame_ids: torch.Tensor
    boxes: torch.Tensor
    segment: tuple[int, int]


@dataclass(frozen=True)
class TubePrediction:
    """A video's predicted tube after merging and interpolation.

    segment: (start, end) in original frame ids, end exclusive.
    frame_ids: (F,) int64, every original frame from the first to the last sampled frame.
    boxes: (F, 4) float64 xyxy original pixels at those frames.
    """

    segment: tuple[int, int]
    frame_ids: torch.Tensor
    boxes: torch.Tensor


def interleaved_passes(num_frames: int, num_passes: int = 2) -> list[torch.Tensor]:
    """Positions (into the sampled frames) of each pass: pass k takes positions k, k + P, k + 2P, ...

    With P = 2 this is the release's split into `ids[0::2]` and `ids[1::2]`. Passes that would be empty (fewer
    sampled frames than passes) are left out, so every returned pass has at least one frame.
    """
    if num_frames < 1:
        raise ValueError(f"a video needs at least one sampled frame, got {num_frames}")
    if num_passes < 1:
        raise ValueError(f"num_passes must be >= 1, got {num_passes}")
    positions = torch.arange(num_frames)
    return [positions[k::num_passes] for k in range(min(num_passes, num_frames))]


def merge_passes(passes: Sequence[PassPrediction]) -> TubePrediction:
    """Merge the passes of one video: pooled boxes interpolated to every frame, segment = [min start, max end)."""
    if not passes:
        raise ValueError("merge_passes needs at least one pass")
    for k, p in enumerate(passes):
        if p.boxes.shape != (p.frame_ids.numel(), 4):
            raise ValueError(
                f"pass {k}: {p.frame_ids.numel()} frame ids need boxes of shape ({p.frame_ids.numel()}, 4), "
                f"got {tuple(p.boxes.shape)}"
            )
        if int(p.segment[1]) <= int(p.segment[0]):
            raise ValueError(f"pass {k}: segment {tuple(p.segment)} is empty (the end is exclusive)")
    frame_ids = torch.cat([p.frame_ids.reshape(-1).to(torch.int64).cpu() for p in passes])
    boxes = torch.cat([p.boxes.detach().reshape(-1, 4).to(torch.float64).cpu() for p in passes])
    frame_ids, order = torch.sort(frame_ids, stable=True)
    if frame_ids.numel() > 1 and bool((frame_ids[1:] == frame_ids[:-1]).any()):
        raise ValueError(f"passes share frame ids: {frame_ids.unique_consecutive().tolist()} are not disjoint")
    frames, dense = interpolate_boxes(frame_ids, boxes[order])
    segment = (min(int(p.segment[0]) for p in passes), max(int(p.segment[1]) for p in passes))
    return TubePrediction(segment=segment, frame_ids=frames, boxes=dense)


def pass_predictions(
    pred_sted: torch.Tensor,
    pred_boxes: torch.Tensor,
    frame_ids: torch.Tensor,
    orig_size_hw: torch.Tensor,
    time_mask: torch.Tensor | None = None,
    *,
    clip_to_frame: bool,
) -> tuple[list[PassPrediction], Tube]:
    """One pass of B videos post-processed (`cgstvg.model.postprocess.post_process`, on the CPU in float32).

    pred_sted: (B, T, 2), pred_boxes: (B, T, 4), the model's outputs for the pass; frame_ids: (B, T) original frame
    id of each frame of the pass; orig_size_hw: (B, 2); time_mask: (B, T) True = padded frame, None = all real;
    clip_to_frame: see `post_process` (False in evaluation, as the release; True for `cgstvg ground`).
    Returns each video's PassPrediction (its real frames) and the post-processed `Tube` of the batch.
    """
    tube = post_process(
        pred_sted.float().cpu(),
        pred_boxes.float().cpu(),
        frame_ids,
        orig_size_hw,
        time_mask,
        clip_to_frame=clip_to_frame,
    )
    t = frame_ids.shape[1]
    lengths = [t] * frame_ids.shape[0] if time_mask is None else (t - time_mask.sum(dim=1)).tolist()
    predictions = [
        PassPrediction(
            frame_ids=frame_ids[i, :n],
            boxes=tube.boxes_xyxy[i, :n],
            segment=(int(tube.sted_frame_ids[i, 0]), int(tube.sted_frame_ids[i, 1])),
        )
        for i, n in enumerate(lengths)
    ]
    return predictions, tube


def _num_passes(protocol: str) -> int:
    if protocol not in TEST_PROTOCOLS:
        raise ValueError(f"protocol must be one of {tuple(TEST_PROTOCOLS)}, got {protocol!r}")
    return TEST_PROTOCOLS[protocol]


def predict_passes(
    num_frames: Sequence[int],
    predict_pass: Callable[[int, int], Sequence[PassPrediction]],
    protocol: str = "two_pass",
) -> list[TubePrediction]:
    """Run every pass of `protocol` on a batch of videos and merge each video's passes.

    num_frames: per video, the number N_i of its sampled frames (2x the training rate for "two_pass").
    predict_pass(k, P) runs pass k of P, each video on its sampled frames [k::P], and returns one PassPrediction per
    video. A video with fewer frames than passes has no pass k >= N_i (as `interleaved_passes` leaves it out): its
    prediction for that pass is ignored.
    """
    passes = _num_passes(protocol)
    if any(n < 1 for n in num_frames):
        raise ValueError(f"a video needs at least one sampled frame, got {list(num_frames)}")
    per_video: list[list[PassPrediction]] = [[] for _ in num_frames]
    for k in range(min(passes, max(num_frames, default=0))):
        predictions = predict_pass(k, passes)
        if len(predictions) != len(num_frames):
            raise ValueError(f"pass {k}: {len(predictions)} predictions for {len(num_frames)} videos")
        for video, n, prediction in zip(per_video, num_frames, predictions):
            if k < n:
                video.append(prediction)
    return [merge_passes(video) for video in per_video]


def run_protocol(
    frame_ids: torch.Tensor,
    predict_pass: Callable[[torch.Tensor], PassPrediction],
    protocol: str = "two_pass",
) -> TubePrediction:
    """`predict_passes` for one video: `predict_pass` receives the positions of each pass instead of its index.

    frame_ids: (N,) original frame ids of all sampled frames (2x the training rate for "two_pass", the training
    rate for "single_pass"). predict_pass(positions) receives the (T,) positions into those N frames that the
    pass sees (slice the frames / features with them) and returns the pass's `PassPrediction`.
    """
    positions = interleaved_passes(int(frame_ids.numel()), _num_passes(protocol))
    [tube] = predict_passes([int(frame_ids.numel())], lambda k, _: [predict_pass(positions[k])], protocol)
    return tube


__all__ = [
    "TEST_PROTOCOLS",
    "PassPrediction",
    "TubePrediction",
    "interleaved_passes",
    "merge_passes",
    "pass_predictions",
    "predict_passes",
    "run_protocol",
]
