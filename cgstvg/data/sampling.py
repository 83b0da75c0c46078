"""Frame sampling policies: which original frames of a video a sample keeps.

Every policy returns sorted, 0-based original frame ids (absolute video frame numbers). Three policies:

- `hcstvg_frame_ids`: the release's HC-STVG rule. Candidates are `segment_start .. segment_end - 1` (the release
  lists frames `range(0, img_num - 1)`, dropping the last video frame); a candidate `f` is kept when
  `int(f * rate)` exceeds that of the last kept frame, `rate = target_fps / video_fps`; the first candidate is
  always kept and the last candidate is appended when it was not. Train uses 3.2 fps, evaluation twice that.
- `vidstg_frame_ids`: the release's VidSTG rule. All frames of `segment_start .. segment_end` (VidSTG
  `used_segment`); when there are more than `n` of them, `np.linspace(0, len - 1, n)` truncated to int picks
  `n`; shorter segments keep every frame (no upsampling). `n` = 64 train, 128 evaluation.
- `fixed_frame_ids`: the paper's fixed clip length Nv. Exactly `n` ids, the centres of `n` equal bins over the
  segment; a segment shorter than `n` repeats frames so every clip has the same length.

`sample_frame_ids` picks the policy from a params mapping (the `shard.sampling` section) and applies the
evaluation density: evaluation splits are sampled `eval_multiplier` (2) times denser, as in the release, so that
evaluation can run the two interleaved passes `ids[0::2]` and `ids[1::2]`.
"""

from __future__ import annotations

import numpy as np

POLICIES = ("hcstvg", "vidstg", "fixed")
TRAIN_SPLITS = ("train",)


def hcstvg_frame_ids(segment_start: int, segment_end: int, video_fps: float, target_fps: float) -> list[int]:
    """The release's HC-STVG fps rule over `segment_start .. segment_end - 1` (the last frame is dropped)."""
    if video_fps <= 0 or target_fps <= 0:
        raise ValueError(f"fps must be positive, got video_fps={video_fps}, target_fps={target_fps}")
    candidates = range(segment_start, segment_end)  # exclusive end: the release drops the last video frame
    if len(candidates) == 0:
        return [segment_start]
    rate = target_fps / video_fps
    kept = [candidates[0]]
    for f in candidates[1:]:
        if int(f * rate) > int(kept[-1] * rate):
            kept.append(f)
    if kept[-1] != candidates[-1]:
        kept.append(candidates[-1])
    return kept


def vidstg_frame_ids(segment_start: int, segment_end: int, n: int) -> list[int]:
    """The release's VidSTG rule: linspace to `n` frames inside the inclusive segment, every frame when fewer."""
    frames = np.arange(segment_start, segment_end + 1)
    if len(frames) > n:
        frames = frames[np.linspace(0, len(frames) - 1, num=n).astype(np.int64)]
    return frames.tolist()


def fixed_frame_ids(segment_start: int, segment_end: int, n: int) -> list[int]:
    """Exactly `n` ids: the centre frame of each of `n` equal bins over the inclusive segment (repeats if short)."""
    length = segment_end - segment_start + 1
    centres = (np.arange(n) + 0.5) * length / n
    return (segment_start + np.floor(centres).astype(np.int64)).tolist()


def sample_frame_ids(
    params: dict, *, policy: str, split: str, fps: float, segment_start: int, segment_end: int
) -> list[int]:
    """Apply a policy with its params (`shard.sampling`), `eval_multiplier` times denser outside training.

    params keys: `hcstvg_fps` (3.2), `vidstg_frames` (64), `fixed_frames` (64), `eval_multiplier` (2).
    """
    density = 1 if split in TRAIN_SPLITS else int(params["eval_multiplier"])
    if policy == "hcstvg":
        return hcstvg_frame_ids(segment_start, segment_end, fps, float(params["hcstvg_fps"]) * density)
    if policy == "vidstg":
        return vidstg_frame_ids(segment_start, segment_end, int(params["vidstg_frames"]) * density)
    if policy == "fixed":
        return fixed_frame_ids(segment_start, segment_end, int(params["fixed_frames"]) * density)
    raise ValueError(f"unknown sampling policy {policy!r} (choose from {', '.join(POLICIES)})")


__all__ = ["POLICIES", "TRAIN_SPLITS", "fixed_frame_ids", "hcstvg_frame_ids", "sample_frame_ids", "vidstg_frame_ids"]
