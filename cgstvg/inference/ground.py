"""Ground one sentence in one video: sample, resize, run the model per pass, post-process, merge into a tube.

The steps follow the checkpoint's params (`GroundingParams`), so a new video is fed as the test split was:
1. frames: the whole video is the segment (0 .. frames - 1); the sampling policy picks frame ids at
   `passes` x the training rate (`cgstvg.data.sampling.sample_frame_ids` with `eval_multiplier` = passes),
   and at most `passes x max_video_len` of them (the sine time table's length): longer videos are thinned
   evenly over the policy's ids (`sampling.capped` in the result);
2. frames are resized by `shard.resize`'s rule and ImageNet-normalised, exactly as the shards and the loader do;
3. the release's two-pass protocol through the evaluation's own code (`cgstvg.evaluation.protocol`: `run_protocol`
   drives `predict_passes`, each pass is post-processed by `pass_predictions`): the model runs on `ids[0::2]` and
   on `ids[1::2]`; each pass becomes a segment and original-pixel boxes, and the passes are merged: the segment is
   [min start, max end), the boxes are interpolated linearly to every frame (single_pass: one pass over the ids
   at the training rate);
4. unlike `evaluate`, which clamps boxes at 0 only as the release's evaluator does, boxes are also clipped to the
   frame (`clip_to_frame=True`): the output format promises boxes inside the frame.

`GroundingResult.to_json` is the output format (documented there).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from cgstvg.data.collate import normalize_frames
from cgstvg.data.resize import resized_size
from cgstvg.data.sampling import sample_frame_ids
from cgstvg.evaluation.protocol import PassPrediction, TubePrediction, pass_predictions, run_protocol
from cgstvg.inference.checkpoint import GroundingModel
from cgstvg.inference.errors import InputError
from cgstvg.inference.video import DEFAULT_MAX_SECONDS, VideoInfo, open_video
from cgstvg.visualize import render_prediction

RENDER_MAX_SIDE = 640
"""Rendered videos are scaled down so that their long side is at most this many pixels."""


@dataclass
class GroundingResult:
    """The predicted tube of one (video, sentence) pair.

    frame_ids: (N,) int64, the sampled original frames the model saw. tube: the merged prediction (segment
    end exclusive, one xyxy box in original pixels per frame from the first to the last sampled frame).
    conf: (F,) float64 box confidence at `tube.frame_ids` ((sigmoid(conf_a) + sigmoid(conf_m)) / 2 in [0, 1],
    interpolated between sampled frames like the boxes), None when the model has no confidence heads
    (context_mode 'none'). pass_scores: per pass, the probability of the chosen (start, end) pair.
    """

    video: VideoInfo
    sentence: str
    frame_ids: torch.Tensor
    tube: TubePrediction
    conf: np.ndarray | None
    pass_scores: list[float]
    model_size: tuple[int, int]
    policy: str
    protocol: str
    capped: bool

    def to_json(self, checkpoint: dict | None = None) -> dict:
        """The output format.

        {"sentence", "video": {path, frames, fps, height, width, duration_s}, "checkpoint": {path, sha256, layout,
         step}, "segment": {start_frame, end_frame (inclusive), end_frame_exclusive (the release's), start_s
         (the start frame's pts), end_s (the end of the end frame), frames (count), score (mean over passes of the
         probability of the chosen start/end pair)}, "boxes": one per frame start_frame..end_frame: {frame, time_s
         (the frame's pts in seconds; frame / fps only where the video has no usable pts),
         box_xyxy [x1, y1, x2, y2] original pixels inside the frame, conf (float in [0, 1] or null), sampled (the
         model saw this frame; the others are interpolated)}, "sampling": {policy, protocol, passes,
         sampled_frames, frame_ids, model_input_hw, capped}}
        """
        video = self.video
        start, end_excl = self.tube.segment
        first = int(self.tube.frame_ids[0])
        sampled = set(self.frame_ids.tolist())
        boxes = []
        for frame in range(start, end_excl):
            i = frame - first
            boxes.append(
                {
                    "frame": frame,
                    "time_s": video.time_of(frame),
                    "box_xyxy": [float(v) for v in self.tube.boxes[i].tolist()],
                    "conf": None if self.conf is None else float(self.conf[i]),
                    "sampled": frame in sampled,
                }
            )
        return {
            "sentence": self.sentence,
            "video": self.video.to_json(),
            "checkpoint": checkpoint or {},
            "segment": {
                "start_frame": start,
                "end_frame": end_excl - 1,
                "end_frame_exclusive": end_excl,
                "start_s": video.time_of(start),
                "end_s": video.time_of(end_excl),
                "frames": end_excl - start,
                "score": float(np.mean(self.pass_scores)),
            },
            "boxes": boxes,
            "sampling": {
                "policy": self.policy,
                "protocol": self.protocol,
                "passes": len(self.pass_scores),
                "sampled_frames": int(self.frame_ids.numel()),
                "frame_ids": self.frame_ids.tolist(),
                "model_input_hw": list(self.model_size),
                "capped": self.capped,
            },
        }


def sampled_frame_ids(grounding: GroundingModel, info: VideoInfo) -> tuple[list[int], bool]:
    """Frame ids of the whole video under the checkpoint's policy, and whether they were thinned to fit."""
    params = grounding.params
    passes = params.passes
    ids = sample_frame_ids(
        {**params.sampling, "eval_multiplier": passes},
        policy=params.sampling["policy"],
        split="test",
        fps=info.fps,
        segment_start=0,
        segment_end=info.frames - 1,
    )
    cap = passes * grounding.model.head.cfg.max_video_len
    if len(ids) <= cap:
        return ids, False
    keep = np.linspace(0, len(ids) - 1, num=cap).round().astype(np.int64)
    return [ids[k] for k in keep], True


def model_input_size(grounding: GroundingModel, info: VideoInfo) -> tuple[int, int]:
    """(height, width) the frames are resized to, by the checkpoint's `shard.resize` rule."""
    resize = grounding.params.resize
    return resized_size(
        info.height,
        info.width,
        short_side=resize["short_side"],
        max_long_side=resize["max_long_side"],
        mode=resize.get("mode", "aspect"),
        width_cap=resize.get("width_cap", 1.4),
    )


def predict_tube(
    grounding: GroundingModel, frames: torch.Tensor, frame_ids: torch.Tensor, orig_hw: tuple[int, int], sentence: str
) -> tuple[TubePrediction, np.ndarray | None, list[float]]:
    """The checkpoint's test protocol on one video's sampled frames (N, 3, h, w) uint8 at `frame_ids` (N,).

    Returns the merged tube, the box confidence at `tube.frame_ids` (interpolated between sampled frames like the
    boxes; None without confidence heads) and each pass's probability of its (start, end) pair.
    """
    conf_parts: list[tuple[torch.Tensor, torch.Tensor]] = []
    scores: list[float] = []

    @torch.inference_mode()
    def predict_pass(positions: torch.Tensor) -> PassPrediction:
        clip = normalize_frames(frames[positions]).to(grounding.device)[None]  # (1, T, 3, h, w)
        out = grounding.model(clip, [sentence])
        [prediction], tube = pass_predictions(
            out.pred_sted, out.pred_boxes, frame_ids[positions][None], torch.tensor([orig_hw]), clip_to_frame=True
        )
        scores.append(float(tube.score[0].exp()))
        if out.boxes_conf is not None:
            conf_parts.append((frame_ids[positions], out.boxes_conf[0].float().cpu() / 2))
        return prediction

    tube = run_protocol(frame_ids, predict_pass, grounding.params.protocol)
    conf = None
    if conf_parts:
        # The same linear interpolation between sampled frames as the boxes (cgstvg.evaluation.interpolate).
        at = torch.cat([c[0] for c in conf_parts]).numpy()
        values = torch.cat([c[1] for c in conf_parts]).numpy()
        order = np.argsort(at, kind="stable")
        conf = np.interp(tube.frame_ids.numpy(), at[order], values[order])
    return tube, conf, scores


def ground(
    grounding: GroundingModel,
    video_path: str | os.PathLike,
    sentence: str,
    *,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    render: str | os.PathLike | None = None,
    render_max_side: int = RENDER_MAX_SIDE,
) -> GroundingResult:
    """Ground `sentence` in the video at `video_path`; with `render`, also write the video with the tube drawn
    (.mp4 or .gif; the sampled frames at real-time speed, red box inside the predicted segment, sentence as a
    caption). Raises InputError / VideoError (one line naming the input) on bad input."""
    sentence = sentence.strip() if isinstance(sentence, str) else ""
    if not sentence:
        raise InputError(f"{video_path}: the sentence is empty")
    if render is not None and os.path.splitext(str(render))[1].lower() not in (".mp4", ".gif"):
        raise InputError(f"{render}: the rendered video must end in .mp4 or .gif")
    video = open_video(video_path, max_seconds)
    info = video.info
    ids, capped = sampled_frame_ids(grounding, info)
    size = model_input_size(grounding, info)
    sizes = [size]
    if render is not None:
        scale = min(1.0, render_max_side / max(info.height, info.width))
        sizes.append((max(2, round(info.height * scale)), max(2, round(info.width * scale))))
    decoded = video.read(ids, sizes)
    frame_ids = torch.tensor(ids, dtype=torch.int64)
    tube, conf, scores = predict_tube(grounding, decoded[0], frame_ids, (info.height, info.width), sentence)
    result = GroundingResult(
        video=info,
        sentence=sentence,
        frame_ids=frame_ids,
        tube=tube,
        conf=conf,
        pass_scores=scores,
        model_size=size,
        policy=grounding.params.sampling["policy"],
        protocol=grounding.params.protocol,
        capped=capped,
    )
    if render is not None:
        render_prediction(
            render,
            decoded[1].permute(0, 2, 3, 1).numpy(),
            ids,
            sentence=sentence,
            pred_segment=tube.segment,
            pred_frames=tube.frame_ids,
            pred_boxes=tube.boxes,
            original_size=(info.height, info.width),
            fps=len(ids) / info.duration_s,
        )
    return result


__all__ = ["GroundingResult", "RENDER_MAX_SIDE", "ground", "model_input_size", "predict_tube", "sampled_frame_ids"]
