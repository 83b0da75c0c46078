"""HC-STVG v1 and v2 annotations -> normalized video-sentence pairs.

Raw layout under the data root (`dataset` is "hcstvg_v1" or "hcstvg_v2"):
    <dataset>/annos/<split>.json   a dict keyed by video file name, one record (= one pair) per video
    <dataset>/videos/<key>         the video

Record formats, detected per record:
- v1 keys, also used by v2 files converted the way CG-STVG reads them: caption, width, height;
- raw v2 keys (as TubeDETR's preprocessing reads them): English, img_size = [height, width].
Both carry bbox = [[x, y, w, h], ...] (one box per frame from st_frame on), st_frame (1-based) and img_num.

Conventions of the authors' release (official-cgstvg-code.md, section 2.1):
- tube_start = st_frame - 1 and tube_end = tube_start + len(bbox) - 1: 0-based, inclusive;
- xywh -> xyxy pixels, clipped to the frame (the release clips x2/y2 to width/height; x1/y1 are clipped at 0
  as well, which changes nothing for valid boxes);
- every clip lasts 20 s, so fps = img_num / 20 (`FpsSource.IMG_NUM_OVER_20`); the usable range is the whole clip.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cgstvg.data.pairs import SplitPairs, check_boxes, path_inside, safe_id
from cgstvg.data.raw_json import (
    AnnotationError,
    JsonObject,
    expect_type,
    int_field,
    list_field,
    load_json,
    str_field,
)
from cgstvg.data.schema import FpsSource, RejectReason

CLIP_SECONDS = 20  # the release's assumption for every HC-STVG clip (fps = img_num / 20)


@dataclass(frozen=True)
class HcstvgRecord:
    """One parsed record. `bbox_xywh` has shape (N, 4), one box per frame from st_frame on."""

    caption: str
    width: int
    height: int
    img_num: int
    st_frame: int
    bbox_xywh: np.ndarray


def annotation_files(raw_root: Path, dataset: str) -> list[tuple[str, Path]]:
    """(split, file) for every `<dataset>/annos/<split>.json`, sorted by split."""
    return [(path.stem, path) for path in sorted((raw_root / dataset / "annos").glob("*.json"))]


def parse_record(record: Any, file: Path, key: str) -> HcstvgRecord:
    """Validate one record's keys and types; raise `AnnotationError` naming the file and the key."""
    rid = f"record '{key}'"
    expect_type(record, dict, file, rid, "record")
    if "English" in record or "img_size" in record:  # raw v2 keys
        caption = str_field(record, "English", file, rid)
        size = list_field(record, "img_size", file, rid)
        if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
            raise AnnotationError(file, rid, f"key 'img_size': expected [height, width] positive integers, got {size}")
        height, width = size
    else:
        caption = str_field(record, "caption", file, rid)
        width = int_field(record, "width", file, rid, minimum=1)
        height = int_field(record, "height", file, rid, minimum=1)
    bbox = list_field(record, "bbox", file, rid)
    for i, box in enumerate(bbox):
        if not (isinstance(box, list) and len(box) == 4) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in box
        ):
            raise AnnotationError(file, rid, f"key 'bbox' item {i}: expected [x, y, w, h] numbers, got {box!r}")
    return HcstvgRecord(
        caption=caption,
        width=width,
        height=height,
        img_num=int_field(record, "img_num", file, rid),
        st_frame=int_field(record, "st_frame", file, rid),
        bbox_xywh=np.asarray(bbox, dtype=np.float64).reshape(-1, 4),
    )


def read_split(raw_root: Path, dataset: str, split: str, file: Path) -> SplitPairs:
    """Read one HC-STVG annotation file into rows and rejects (one input pair per top-level key)."""
    data = load_json(file, keep_pairs=True)
    if not isinstance(data, JsonObject):
        raise AnnotationError(
            file, "top level", f"expected an object keyed by video file name, got {type(data).__name__}"
        )
    out = SplitPairs(dataset, split, pairs_in=len(data.pairs))
    rel_file = file.relative_to(raw_root).as_posix()
    records = [(key, parse_record(record, file, key)) for key, record in data.pairs]  # malformed: stop first
    for key, record in records:
        _add_pair(out, raw_root, key, record, f"{rel_file}#{key}")
    return out


def _add_pair(out: SplitPairs, raw_root: Path, key: str, rec: HcstvgRecord, source: str) -> None:
    """Append the pair as a row, or as a reject with the first failing check's reason."""
    stem = posixpath.splitext(key)[0]
    sample_id = safe_id(stem)
    if not out.claim(sample_id, source):
        return
    video_path = path_inside(f"{out.dataset}/videos", key)
    if video_path is None:
        out.reject(sample_id, source, RejectReason.PATH_ESCAPES_ROOT, f"video key '{key}' leaves {out.dataset}/videos")
        return
    sentence = rec.caption.strip()
    if not sentence:
        out.reject(sample_id, source, RejectReason.EMPTY_SENTENCE, "the caption is empty")
        return
    if not (raw_root / video_path).is_file():
        out.reject(sample_id, source, RejectReason.MISSING_VIDEO, f"no video file {video_path}")
        return
    tube_start = rec.st_frame - 1
    tube_end = tube_start + len(rec.bbox_xywh) - 1
    if tube_end < tube_start:
        out.reject(sample_id, source, RejectReason.START_AFTER_END, f"empty bbox list (st_frame {rec.st_frame})")
        return
    if tube_start < 0 or tube_end > rec.img_num - 1:
        out.reject(
            sample_id,
            source,
            RejectReason.TUBE_OUTSIDE_VIDEO,
            f"tube frames {tube_start}..{tube_end} (st_frame {rec.st_frame}, {len(rec.bbox_xywh)} boxes) "
            f"outside the video's frames 0..{rec.img_num - 1}",
        )
        return
    xyxy = rec.bbox_xywh.copy()
    xyxy[:, 2:] += xyxy[:, :2]
    boxes, why = check_boxes(xyxy, rec.width, rec.height, tube_start)
    if boxes is None:
        out.reject(sample_id, source, RejectReason.BAD_BOX, why)
        return
    out.add(
        {
            "dataset": out.dataset,
            "split": out.split,
            "sample_id": sample_id,
            "video_id": stem,
            "video_path": video_path,
            "sentence": sentence,
            "qtype": "declar",
            "width": rec.width,
            "height": rec.height,
            "fps": rec.img_num / CLIP_SECONDS,
            "fps_source": FpsSource.IMG_NUM_OVER_20.value,
            "frame_count": rec.img_num,
            "segment_start": 0,
            "segment_end": rec.img_num - 1,
            "tube_start": tube_start,
            "tube_end": tube_end,
            "boxes": boxes,
            "target_id": None,
            "source": source,
        }
    )


__all__ = ["CLIP_SECONDS", "HcstvgRecord", "annotation_files", "parse_record", "read_split"]
