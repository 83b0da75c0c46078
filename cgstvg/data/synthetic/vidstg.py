"""VidSTG records for a synthetic clip: a sentence-annotation entry and its VidOR box file.

Entry (Guaranteer/VidSTG-Dataset `{split}_annotations.json`, a list): {"vid", "fps", "frame_count", "width",
"height", "subject/objects": [{"tid", "category"}], "used_segment": {"begin_fid", "end_fid"}, "used_relation":
{"subject_tid", "object_tid", "predicate", "begin_fid", "end_fid"}, "temporal_gt": {"begin_fid", "end_fid"},
"captions": [{"description", "type", "target_id"}], "questions": [...]}. Frame ids are absolute, 0-based and
inclusive. One caption and one question per clip; `used_segment` is a random part of the clip that contains
`temporal_gt`. Object tids are a random permutation, so the target is not always tid 0. The box file holds every
object in every frame, as VidOR's do.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cgstvg.data.synthetic.clip import Clip
from cgstvg.data.synthetic.vidor_boxes import vidor_box_json


def vidstg_records(clip: Clip, vid: str, fps: float) -> tuple[dict, str]:
    """(sentence-annotation entry, VidOR box-file text) of `clip`, stored under video id `vid`."""
    scene, rng = clip.scene, clip.extra_rng
    t, h, w, _ = clip.frames.shape
    start, end = clip.gt
    n = len(scene.objects)
    tids = [int(x) for x in rng.permutation(n)]  # tids[i] is the tid of scene.objects[i]
    target_tid = tids[scene.target]
    # The relation's object: the other object nearest to the target during the GT window (itself if alone).
    centres = (clip.boxes[:, start : end + 1, :2] + clip.boxes[:, start : end + 1, 2:]) / 2
    distance = np.linalg.norm(centres - centres[scene.target], axis=-1).mean(axis=1)
    distance[scene.target] = np.inf if n > 1 else 0.0
    partner = int(np.argmin(distance))
    segment = {"begin_fid": int(rng.integers(0, start + 1)), "end_fid": int(rng.integers(end, t))}
    objects: list[dict[str, Any]] = [{"tid": tids[i], "category": o.shape} for i, o in enumerate(scene.objects)]
    objects.sort(key=lambda o: o["tid"])
    relation = {
        "subject_tid": target_tid,
        "object_tid": tids[partner],
        "predicate": scene.action,
        "begin_fid": start,
        "end_fid": end,
    }
    entry = {
        "vid": vid,
        "fps": float(fps),
        "frame_count": t,
        "width": w,
        "height": h,
        "subject/objects": objects,
        "used_segment": segment,
        "used_relation": relation,
        "temporal_gt": {"begin_fid": start, "end_fid": end},
        "captions": [{"description": clip.caption + ".", "type": "object", "target_id": target_tid}],
        "questions": [{"description": clip.question + "?", "type": "object", "target_id": target_tid}],
    }
    frame_ids = np.arange(t)
    box_text = vidor_box_json(
        vid,
        frame_count=t,
        fps=float(fps),
        width=w,
        height=h,
        objects=objects,
        tracks={tids[i]: (frame_ids, clip.boxes[i]) for i in range(n)},
        relations=[relation],
    )
    return entry, box_text
