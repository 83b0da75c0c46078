"""HC-STVG annotation records (raw v1 and raw v2 keys) for a synthetic clip.

v1 (tzhhhh123/HC-STVG `train.json`/`test.json`, a dict keyed by video file name):
    {"bbox": [[x, y, w, h], ...] one per frame from st_frame on, "st_frame": 1-based first tube frame,
     "st_time", "ed_time" (seconds), "img_num": frame count, "caption", "width", "height"}
v2 raw keys: "English" for the caption and "img_size": [height, width] instead of width/height.

HC-STVG assumes every clip lasts 20 s, so the frame rate is img_num / 20 (`hcstvg_fps`). Captions get the
dataset's style: a capital first letter and a full stop.
"""

from __future__ import annotations

from fractions import Fraction

from cgstvg.data.synthetic.clip import Clip

HCSTVG_SECONDS = 20


def hcstvg_fps(frames: int) -> Fraction:
    """The release's frame-rate convention for HC-STVG: img_num / 20."""
    return Fraction(frames, HCSTVG_SECONDS)


def _style(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:] + "."


def hcstvg_v1_record(clip: Clip) -> dict:
    """The raw HC-STVG v1 record of `clip` (boxes are integer xywh pixels of the target over the GT window)."""
    t, h, w, _ = clip.frames.shape
    start, end = clip.gt
    fps = hcstvg_fps(t)
    tube = clip.target_boxes[start : end + 1]
    return {
        "bbox": [[x1, y1, x2 - x1, y2 - y1] for x1, y1, x2, y2 in tube.tolist()],
        "st_frame": start + 1,
        "st_time": float(start / fps),
        "ed_time": float((end + 1) / fps),
        "img_num": t,
        "caption": _style(clip.caption),
        "width": w,
        "height": h,
    }


def hcstvg_v2_record(clip: Clip) -> dict:
    """The raw HC-STVG v2 record of `clip` ("English", "img_size": [h, w])."""
    record = hcstvg_v1_record(clip)
    record["English"] = record.pop("caption")
    record["img_size"] = [record.pop("height"), record.pop("width")]
    return record
