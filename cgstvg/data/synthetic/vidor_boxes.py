"""VidOR-style per-video box files (`vidstg/bbox_annos/<vid>.json`), for synthetic clips and real VidSTG entries.

The file layout is VidOR's: {"version", "video_id", "video_path", "frame_count", "fps", "width", "height",
"subject/objects": [{"tid", "category"}], "trajectories": [one list per frame of {"tid", "bbox": {"xmin", "ymin",
"xmax", "ymax"}, "generated", "tracker"}], "relation_instances": [{"subject_tid", "object_tid", "predicate",
"begin_fid", "end_fid"}]}. Frame ids are 0-based; boxes are integer pixels.

`write_vidor_box_files` makes box files for REAL VidSTG sentence annotations whose VidOR boxes are not at hand,
so that the real annotations can go through `normalize`: every target (and relation subject/object) gets a
plausible, smoothly moving box in every frame of every temporal_gt that names it, and nothing else, which keeps
the files small. Trajectories are serialized with a string template instead of `json.dumps` on a million small
dicts: for the real val file (about 1.1 M boxes) that is several times faster and the text is identical JSON.
"""

from __future__ import annotations

import json
import os
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np

VIDOR_VERSION = "VERSION 1.0"
_BOX_PREFIX = '{{"tid":{},"bbox":'
_BOX_REST = '{{"xmin":{},"ymin":{},"xmax":{},"ymax":{}}},"generated":0,"tracker":"none"}}'


def vidor_box_json(
    video_id: str,
    *,
    frame_count: int,
    fps: float,
    width: int,
    height: int,
    objects: list[dict],
    tracks: dict[int, tuple[np.ndarray, np.ndarray]],
    relations: list[dict],
) -> str:
    """The text of one VidOR box file.

    tracks: {tid: (frame ids (K,) int, boxes (K, 4) int xyxy)}; frames where no track has a box get an empty list.
    """
    frames: list[list[str]] = [[] for _ in range(frame_count)]
    for tid in sorted(tracks):
        ids, boxes = tracks[tid]
        ids = np.asarray(ids).tolist()
        if ids and (min(ids) < 0 or max(ids) >= frame_count):
            raise ValueError(f"video {video_id}: track {tid} has frames outside 0..{frame_count - 1}")
        prefix = _BOX_PREFIX.format(int(tid))
        for f, box in zip(ids, np.asarray(boxes, dtype=np.int64).tolist()):
            frames[f].append(prefix + _BOX_REST.format(*box))
    head = {
        "version": VIDOR_VERSION,
        "video_id": video_id,
        "video_path": f"{video_id}.mp4",
        "frame_count": frame_count,
        "fps": fps,
        "width": width,
        "height": height,
        "subject/objects": objects,
    }
    trajectories = ",".join("[" + ",".join(boxes) + "]" for boxes in frames)
    tail = json.dumps(relations, separators=(",", ":"))
    head_text = json.dumps(head, separators=(",", ":"))[:-1]  # without its closing brace
    return head_text + f',"trajectories":[{trajectories}],"relation_instances":{tail}}}'


def _require(entry: dict, keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in entry]
    if missing:
        raise ValueError(f"{where}: missing key(s) {', '.join(missing)}")


def _smooth_track(rng: np.random.Generator, n: int, width: int, height: int) -> np.ndarray:
    """(n, 4) int xyxy boxes of one object: a box of plausible size drifting and wobbling inside the frame."""
    w = rng.uniform(0.12, 0.45) * width
    h = rng.uniform(0.15, 0.6) * height
    t = np.arange(n, dtype=np.float64)
    scale = 1.0 + 0.1 * np.sin(t / rng.uniform(20, 60) + rng.uniform(0, 2 * np.pi))
    bw, bh = w * scale, h * scale
    speed = rng.normal(0, 0.002, 2) * np.array([width, height])  # pixels per frame, a slow walk across the view
    cx = rng.uniform(0.3, 0.7) * width + speed[0] * t + 0.03 * width * np.sin(t / rng.uniform(10, 40))
    cy = rng.uniform(0.35, 0.65) * height + speed[1] * t
    cx = np.clip(cx, bw / 2, width - bw / 2)
    cy = np.clip(cy, bh / 2, height - bh / 2)
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
    boxes = np.rint(boxes).astype(np.int64)
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)
    return boxes


def write_vidor_box_files(
    entries: list[dict], out_dir: str | os.PathLike, seed: int, *, source: str = "entries"
) -> int:
    """Write `<out_dir>/<vid>.json` for every video of real VidSTG sentence annotations; return the file count.

    Each file matches its entries' frame_count, fps, width and height and lists their subject/objects and
    relations. Every tid named by a caption, a question or the used_relation gets a box in every frame of that
    entry's temporal_gt (its end clipped to frame_count - 1, as the release does), and frames no entry needs stay
    empty. Boxes derive from (seed, vid, tid) only. `source` names the annotation file in error messages.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    videos: dict[str, dict] = {}
    needed: dict[str, dict[int, set[int]]] = defaultdict(lambda: defaultdict(set))
    for i, entry in enumerate(entries):
        where = f"{source}[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected an object, got {type(entry).__name__}")
        _require(entry, ("vid",), where)
        vid = str(entry["vid"])
        where = f"{where} (vid {vid})"
        _require(entry, ("fps", "frame_count", "width", "height", "subject/objects", "temporal_gt"), where)
        header = (int(entry["frame_count"]), float(entry["fps"]), int(entry["width"]), int(entry["height"]))
        video = videos.setdefault(vid, {"header": header, "objects": {}, "relations": []})
        if video["header"] != header:
            other = video["header"]
            raise ValueError(f"{where}: frame_count/fps/width/height {header} differ from another entry's {other}")
        for obj in entry["subject/objects"]:
            video["objects"].setdefault(int(obj["tid"]), obj["category"])
        tids = {int(s["target_id"]) for s in entry.get("captions", []) + entry.get("questions", [])}
        relation = entry.get("used_relation")
        if relation:
            tids |= {int(relation["subject_tid"]), int(relation["object_tid"])}
            if relation not in video["relations"]:
                video["relations"].append(relation)
        _require(entry["temporal_gt"], ("begin_fid", "end_fid"), f"{where} temporal_gt")
        begin = max(int(entry["temporal_gt"]["begin_fid"]), 0)
        end = min(int(entry["temporal_gt"]["end_fid"]), header[0] - 1)
        for tid in tids:
            needed[vid][tid].update(range(begin, end + 1))

    for vid, video in videos.items():
        frame_count, fps, width, height = video["header"]
        tracks = {}
        for tid, frame_ids in needed[vid].items():
            if not frame_ids:  # a temporal_gt that starts beyond the video's last frame needs no box
                continue
            ids = np.array(sorted(frame_ids), dtype=np.int64)
            rng = np.random.default_rng([int(seed), zlib.crc32(vid.encode()), tid])
            # One smooth track over the tid's whole span, sampled at the frames needed.
            tracks[tid] = (ids, _smooth_track(rng, int(ids[-1] - ids[0] + 1), width, height)[ids - ids[0]])
        objects = [{"tid": tid, "category": cat} for tid, cat in sorted(video["objects"].items())]
        text = vidor_box_json(
            vid,
            frame_count=frame_count,
            fps=fps,
            width=width,
            height=height,
            objects=objects,
            tracks=tracks,
            relations=video["relations"],
        )
        (out_dir / f"{vid}.json").write_text(text)
    return len(videos)
