"""VidSTG sentence annotations + VidOR box files -> normalized video-sentence pairs.

Raw layout under the data root:
    vidstg/sent_annos/<split>_annotations.json   a list of entries (vid, fps, frame_count, width, height,
                                                 subject/objects, used_segment, temporal_gt, captions, questions)
    vidstg/bbox_annos/<vid>.json                 the VidOR box file: trajectories[frame] = [{tid, bbox{xmin, ymin,
                                                 xmax, ymax}}, ...]; an optional "video_path" names the video
    vidstg/videos/<video_path> or vidstg/videos/<vid>.mp4

Conventions of the authors' release (official-cgstvg-code.md, section 2.2):
- one pair per caption (qtype 'declar') and per question ('inter');
- boxes of the target tid for the temporal_gt frames begin..min(end + 1, frame_count) - 1; a missing box on that
  last frame copies the previous one (VidOR end frames are exclusive), a missing box anywhere else is a hole and
  the pair is dropped (the release's 'spoiled' pairs);
- a temporal_gt end beyond used_segment is clipped to the segment end; a GT that starts outside used_segment
  is dropped (the release drops only GTs that lie wholly outside it; we also drop a start before the segment,
  which never happens in the released annotations, because no frame before the segment is ever sampled);
- fps comes from the annotation; the usable frame range is used_segment.

Cross-checks the release does not make (each a reject, never a silent choice):
- an entry that repeats an earlier entry verbatim (same JSON, key order aside) would give every pair twice: its
  pairs are rejected as `duplicate_entry`, naming the first copy, which is kept;
- a VidOR frame that gives the target tid two different boxes leaves the tube ambiguous: a pair whose tube
  frames contain such a frame is rejected as `duplicate_box`, naming the box file, the frame and the tid (a box
  repeated identically is harmless and accepted; conflicts outside a pair's tube do not concern it).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from cgstvg.data.pairs import SplitPairs, check_boxes, path_inside, safe_id
from cgstvg.data.raw_json import (
    AnnotationError,
    expect_type,
    field,
    int_field,
    list_field,
    load_json,
    number_field,
    str_field,
)
from cgstvg.data.schema import FpsSource, RejectReason

DATASET = "vidstg"
SUFFIX = "_annotations.json"
_SENTENCE_KINDS = (("captions", "declar"), ("questions", "inter"))
_NUMBER_TYPES = {int, float}


@dataclass(frozen=True)
class Sentence:
    qtype: str  # 'declar' (a caption) or 'inter' (a question)
    k: int  # index within the entry's captions or questions
    description: str
    target_id: int


@dataclass(frozen=True)
class VidstgEntry:
    """One parsed entry. Frame ids are 0-based and inclusive, as in the file."""

    index: int
    vid: str
    fps: float
    frame_count: int
    width: int
    height: int
    segment: tuple[int, int]  # used_segment begin_fid, end_fid
    gt: tuple[int, int]  # temporal_gt begin_fid, end_fid
    tids: frozenset[int]  # subject/objects
    sentences: tuple[Sentence, ...]


@dataclass(frozen=True)
class Track:
    """One tid's boxes over the file's frames: `present` (F,) bool, `boxes` (F, 4) xyxy pixels (0 where absent).

    `conflicts[frame]` lists the boxes of a frame that gives this tid more than one different box (in file order;
    `boxes` holds the last of them, and no pair that uses the frame is written).
    """

    present: np.ndarray
    boxes: np.ndarray
    conflicts: dict[int, list[list[float]]]


@dataclass(frozen=True)
class BoxFile:
    """A VidOR box file: `tracks[tid]` for every tid that has a box in some frame; F = len(trajectories)."""

    video_path: str | None
    tracks: dict[int, Track]


def annotation_files(raw_root: Path) -> list[tuple[str, Path]]:
    """(split, file) for every `vidstg/sent_annos/<split>_annotations.json`, sorted by split."""
    files = sorted((raw_root / DATASET / "sent_annos").glob(f"*{SUFFIX}"))
    return [(path.name[: -len(SUFFIX)], path) for path in files]


def _frame_range(entry: Any, key: str, file: Path, rid: str) -> tuple[int, int]:
    span = expect_type(field(entry, key, file, rid), dict, file, rid, f"key '{key}'")
    return int_field(span, "begin_fid", file, f"{rid} {key}"), int_field(span, "end_fid", file, f"{rid} {key}")


def parse_entry(entry: object, file: Path, index: int) -> VidstgEntry:
    """Validate one entry's keys and types; raise `AnnotationError` naming the file and the entry."""
    rid = f"entry {index}"
    expect_type(entry, dict, file, rid, "entry")
    tids = frozenset(
        int_field(obj, "tid", file, f"{rid} subject/objects[{j}]")
        for j, obj in enumerate(list_field(entry, "subject/objects", file, rid))
    )
    sentences = []
    for key, qtype in _SENTENCE_KINDS:
        for k, sentence in enumerate(list_field(entry, key, file, rid)):
            sid = f"{rid} {key}[{k}]"
            description = str_field(sentence, "description", file, sid)
            sentences.append(Sentence(qtype, k, description, int_field(sentence, "target_id", file, sid)))
    return VidstgEntry(
        index=index,
        vid=str_field(entry, "vid", file, rid),
        fps=number_field(entry, "fps", file, rid),
        frame_count=int_field(entry, "frame_count", file, rid),
        width=int_field(entry, "width", file, rid, minimum=1),
        height=int_field(entry, "height", file, rid, minimum=1),
        segment=_frame_range(entry, "used_segment", file, rid),
        gt=_frame_range(entry, "temporal_gt", file, rid),
        tids=tids,
        sentences=tuple(sentences),
    )


def load_box_file(path: Path) -> BoxFile:
    """Parse a VidOR box file; raise `AnnotationError` naming the file and the frame/object at fault."""
    data = load_json(path)
    if not isinstance(data, dict):
        raise AnnotationError(path, "top level", f"expected an object, got {type(data).__name__}")
    video_path = data.get("video_path")
    if video_path is not None:
        expect_type(video_path, str, path, "top level", "key 'video_path'")
    trajectories = list_field(data, "trajectories", path, "top level")
    frames: dict[int, list[int]] = defaultdict(list)
    coords: dict[int, list[tuple]] = defaultdict(list)
    for frame, objects in enumerate(trajectories):
        if type(objects) is not list:
            expect_type(objects, list, path, f"trajectories[{frame}]", "frame")
        for j, obj in enumerate(objects):
            # Fast path first: a real box file holds ~10^5-10^6 boxes; the checked path below names the fault.
            try:
                tid, bbox = obj["tid"], obj["bbox"]
                box = x1, y1, x2, y2 = bbox["xmin"], bbox["ymin"], bbox["xmax"], bbox["ymax"]
                well_formed = (
                    type(tid) is int
                    and type(x1) in _NUMBER_TYPES
                    and type(y1) in _NUMBER_TYPES
                    and (type(x2) in _NUMBER_TYPES and type(y2) in _NUMBER_TYPES)
                )
            except (KeyError, TypeError):
                well_formed = False
            if not well_formed:
                tid, box = _checked_object(obj, path, f"trajectories[{frame}][{j}]")
            frames[tid].append(frame)
            coords[tid].append(box)
    tracks = {}
    for tid, ids in frames.items():
        present = np.zeros(len(trajectories), dtype=bool)
        present[ids] = True
        given = np.asarray(coords[tid], dtype=np.float64)
        boxes = np.zeros((len(trajectories), 4), dtype=np.float64)
        boxes[ids] = given  # a frame listed twice keeps its last box: rows are in file order
        tracks[tid] = Track(present, boxes, _conflicts(np.asarray(ids), given))
    return BoxFile(video_path, tracks)


def _conflicts(ids: np.ndarray, given: np.ndarray) -> dict[int, list[list[float]]]:
    """{frame: its boxes} for the frames that `ids` (ascending, one entry per box in `given`) lists more than once
    with boxes that differ."""
    conflicts = {}
    for frame in np.unique(ids[1:][ids[1:] == ids[:-1]]).tolist():
        lo, hi = np.searchsorted(ids, frame, side="left"), np.searchsorted(ids, frame, side="right")
        if not (given[lo:hi] == given[lo]).all():
            conflicts[frame] = given[lo:hi].tolist()
    return conflicts


def _checked_object(obj: object, path: Path, rid: str) -> tuple[int, tuple]:
    """(tid, box) of one trajectory object, or the `AnnotationError` that says what is wrong with it."""
    tid = int_field(obj, "tid", path, rid)
    bbox = expect_type(field(obj, "bbox", path, rid), dict, path, rid, "key 'bbox'")
    box = tuple(
        expect_type(field(bbox, k, path, f"{rid} bbox"), (int, float), path, f"{rid} bbox", f"key '{k}'")
        for k in ("xmin", "ymin", "xmax", "ymax")
    )
    return tid, box


def read_split(raw_root: Path, split: str, file: Path, *, progress: bool = False) -> SplitPairs:
    """Read one VidSTG annotation file and its box files into rows and rejects."""
    data = load_json(file)
    if not isinstance(data, list):
        raise AnnotationError(file, "top level", f"expected a list of entries, got {type(data).__name__}")
    entries = [parse_entry(entry, file, i) for i, entry in enumerate(data)]  # malformed: stop before any output
    out = SplitPairs(DATASET, split, pairs_in=sum(len(e.sentences) for e in entries))
    rel_file = file.relative_to(raw_root).as_posix()
    by_vid: dict[str, list] = defaultdict(list)  # one box-file read per video
    first_copy: dict[str, int] = {}  # an entry's canonical JSON -> the index of its first occurrence
    for entry, raw in zip(entries, data):
        first = first_copy.setdefault(json.dumps(raw, sort_keys=True), entry.index)
        for sentence in entry.sentences:
            sample_id = f"{safe_id(entry.vid)}-{entry.index}-{sentence.qtype}{sentence.k}"
            kind = "captions" if sentence.qtype == "declar" else "questions"
            source = f"{rel_file}#{entry.index}/{kind}/{sentence.k}"
            if first != entry.index:
                message = f"entry {entry.index} (vid '{entry.vid}') repeats entry {first} verbatim; the first is kept"
                out.reject(sample_id, source, RejectReason.DUPLICATE_ENTRY, message)
            elif out.claim(sample_id, source):
                by_vid[entry.vid].append((entry, sentence, sample_id, source))
    for vid, pairs in tqdm(by_vid.items(), desc=f"{DATASET}/{split}", unit="video", disable=not progress):
        _add_video_pairs(out, raw_root, vid, pairs)
    return out


def _add_video_pairs(out: SplitPairs, raw_root: Path, vid: str, pairs: list) -> None:
    """Checks shared by all pairs of one video (box file, video file), then each pair."""

    def reject_all(reason: RejectReason, message: str) -> None:
        for _, _, sample_id, source in pairs:
            out.reject(sample_id, source, reason, message)

    box_path = path_inside(f"{DATASET}/bbox_annos", f"{vid}.json")
    if box_path is None:
        return reject_all(RejectReason.PATH_ESCAPES_ROOT, f"vid '{vid}' leaves {DATASET}/bbox_annos")
    if not (raw_root / box_path).is_file():
        return reject_all(RejectReason.MISSING_BOX_FILE, f"no box file {box_path}")
    boxes = load_box_file(raw_root / box_path)
    video_name = boxes.video_path if boxes.video_path is not None else f"{vid}.mp4"
    video_path = path_inside(f"{DATASET}/videos", video_name)
    if video_path is None:
        return reject_all(RejectReason.PATH_ESCAPES_ROOT, f"video '{video_name}' ({box_path}) leaves {DATASET}/videos")
    if not (raw_root / video_path).is_file():
        return reject_all(RejectReason.MISSING_VIDEO, f"no video file {video_path}")
    for entry, sentence, sample_id, source in pairs:
        reason, message, row = _pair(entry, sentence, boxes, box_path)
        if row is None:
            out.reject(sample_id, source, reason, message)
        else:
            row.update(dataset=DATASET, split=out.split, sample_id=sample_id, video_path=video_path, source=source)
            out.add(row)


def _pair(entry: VidstgEntry, sentence: Sentence, boxes: BoxFile, box_path: str):
    """(None, "", row) for a usable pair, else (reason, message, None) for the first failing check."""
    text = sentence.description.strip()
    if not text:
        return RejectReason.EMPTY_SENTENCE, f"the {sentence.qtype} sentence is empty", None
    tid = sentence.target_id
    if tid not in entry.tids:
        return RejectReason.UNKNOWN_TARGET, f"target_id {tid} is not in subject/objects {sorted(entry.tids)}", None
    if tid not in boxes.tracks:
        return RejectReason.UNKNOWN_TARGET, f"target_id {tid} never appears in {box_path}", None
    (seg_begin, seg_end), (gt_begin, gt_end), last = entry.segment, entry.gt, entry.frame_count - 1
    if seg_begin > seg_end or gt_begin > gt_end:
        spans = f"used_segment {seg_begin}..{seg_end}, temporal_gt {gt_begin}..{gt_end}"
        return RejectReason.START_AFTER_END, spans, None
    if seg_begin < 0 or seg_end > last:
        return RejectReason.TUBE_OUTSIDE_VIDEO, f"used_segment {seg_begin}..{seg_end} outside frames 0..{last}", None
    if not seg_begin <= gt_begin <= seg_end:
        return (
            RejectReason.TUBE_OUTSIDE_VIDEO,
            f"temporal_gt starts at frame {gt_begin}, outside used_segment {seg_begin}..{seg_end}",
            None,
        )
    tube_end = min(gt_end, seg_end)
    gt_last_frame = min(gt_end, last)  # the release's last box frame: min(end + 1, frame_count) - 1
    track, length = boxes.tracks[tid], tube_end - gt_begin + 1
    clashes = sorted(f for f in track.conflicts if gt_begin <= f <= tube_end)
    if clashes:
        f, more = clashes[0], f" (and {len(clashes) - 1} more tube frames)" if len(clashes) > 1 else ""
        return (
            RejectReason.DUPLICATE_BOX,
            f"frame {f} of {box_path} gives target {tid} {len(track.conflicts[f])} boxes that differ: "
            f"{track.conflicts[f]}{more}",
            None,
        )
    present = np.zeros(length, dtype=bool)  # frames past the end of `trajectories` count as missing
    xyxy = np.zeros((length, 4), dtype=np.float64)
    stored = track.present[gt_begin : tube_end + 1]
    present[: len(stored)] = stored
    xyxy[: len(stored)] = track.boxes[gt_begin : tube_end + 1]
    if tube_end == gt_last_frame and length > 1 and not present[-1] and present[-2]:
        present[-1], xyxy[-1] = True, xyxy[-2]  # release rule: a missing box on the GT's last frame copies the previous
    missing = np.flatnonzero(~present)
    if missing.size:
        return (
            RejectReason.TRAJECTORY_HOLE,
            f"target {tid} has no box in {missing.size} of {length} tube frames "
            f"(first: frame {gt_begin + int(missing[0])}) in {box_path}",
            None,
        )
    checked, why = check_boxes(xyxy, entry.width, entry.height, gt_begin)
    if checked is None:
        return RejectReason.BAD_BOX, why, None
    row = {
        "video_id": entry.vid,
        "sentence": text,
        "qtype": sentence.qtype,
        "width": entry.width,
        "height": entry.height,
        "fps": entry.fps,
        "fps_source": FpsSource.ANNOTATION.value,
        "frame_count": entry.frame_count,
        "segment_start": seg_begin,
        "segment_end": seg_end,
        "tube_start": gt_begin,
        "tube_end": tube_end,
        "boxes": checked,
        "target_id": tid,
    }
    return None, "", row


__all__ = [
    "BoxFile",
    "Sentence",
    "Track",
    "VidstgEntry",
    "annotation_files",
    "load_box_file",
    "parse_entry",
    "read_split",
]
