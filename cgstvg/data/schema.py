"""The normalized annotation schema, defined once.

Every dataset reader (HC-STVG v1/v2, VidSTG) emits rows of `SAMPLE_SCHEMA`: one row per video-sentence pair.
Pairs that cannot be used go to a rejects table of `REJECT_SCHEMA` with a reason code from `RejectReason`,
so that `input pairs == rows written + rejects` always holds.

Conventions (those of the authors' release):
- frame ids are 0-based and inclusive: `tube_start..tube_end` are the frames that carry a box;
- `boxes` holds one xyxy box in original pixels per tube frame, in order (`len(boxes) == tube_end - tube_start + 1`);
- `segment_start..segment_end` is the usable frame range (VidSTG `used_segment`; the whole clip for HC-STVG).
"""

from __future__ import annotations

import enum

import pyarrow as pa

DATASETS = ("hcstvg_v1", "hcstvg_v2", "vidstg")
QTYPES = ("declar", "inter")  # the release's names: declarative captions, interrogative questions


class FpsSource(str, enum.Enum):
    """Where a sample's fps came from."""

    ANNOTATION = "annotation"  # VidSTG stores fps per entry
    IMG_NUM_OVER_20 = "img_num/20"  # HC-STVG: every clip is assumed to last 20 s (release convention)


class RejectReason(str, enum.Enum):
    """Why a video-sentence pair was not written. The value is the code stored in the rejects table."""

    MISSING_VIDEO = "missing_video"
    MISSING_BOX_FILE = "missing_box_file"
    TRAJECTORY_HOLE = "trajectory_hole"  # the release calls these pairs 'spoiled'
    UNKNOWN_TARGET = "unknown_target"
    TUBE_OUTSIDE_VIDEO = "tube_outside_video"
    START_AFTER_END = "start_after_end"
    BAD_BOX = "bad_box"  # non-finite or zero-area
    EMPTY_SENTENCE = "empty_sentence"
    DUPLICATE_KEY = "duplicate_key"
    DUPLICATE_ENTRY = "duplicate_entry"  # a VidSTG entry repeated verbatim: the first copy is kept
    DUPLICATE_BOX = "duplicate_box"  # the target has two different boxes in one VidOR frame
    PATH_ESCAPES_ROOT = "path_escapes_root"
    # Written by later stages (shard), which append to the same kind of table.
    EMPTY_VIDEO = "empty_video"
    UNDECODABLE_VIDEO = "undecodable_video"
    TOO_FEW_FRAMES = "too_few_frames"
    DECODE_ERROR = "decode_error"
    SIZE_MISMATCH = "size_mismatch"  # decoded frames are not the annotation's width x height
    FRAME_COUNT_MISMATCH = "frame_count_mismatch"  # decodable frames differ from the annotation's count


BOX_TYPE = pa.list_(pa.float32(), 4)

SAMPLE_SCHEMA = pa.schema(
    [
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("sample_id", pa.string(), nullable=False),  # unique within a split, no '.' (a WebDataset key)
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("video_path", pa.string(), nullable=False),  # relative to the raw-data root
        pa.field("sentence", pa.string(), nullable=False),
        pa.field("qtype", pa.string(), nullable=False),  # 'declar' or 'inter'
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("fps", pa.float64(), nullable=False),
        pa.field("fps_source", pa.string(), nullable=False),
        pa.field("frame_count", pa.int32(), nullable=False),
        pa.field("segment_start", pa.int32(), nullable=False),
        pa.field("segment_end", pa.int32(), nullable=False),
        pa.field("tube_start", pa.int32(), nullable=False),
        pa.field("tube_end", pa.int32(), nullable=False),
        pa.field("boxes", pa.list_(BOX_TYPE), nullable=False),  # xyxy pixels, one per tube frame
        pa.field("target_id", pa.int32(), nullable=True),  # VidSTG tid; null for HC-STVG
        pa.field("source", pa.string(), nullable=False),  # "<file relative to root>#<record key or index>"
    ]
)

REJECT_SCHEMA = pa.schema(
    [
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),  # a RejectReason value
        pa.field("message", pa.string(), nullable=False),
    ]
)


def sample_table(rows: list[dict]) -> pa.Table:
    """Build a table of normalized samples; raises if a row does not fit the schema."""
    return pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA)


def reject_table(rows: list[dict]) -> pa.Table:
    """Build a rejects table; raises if a row does not fit the schema."""
    return pa.Table.from_pylist(rows, schema=REJECT_SCHEMA)


__all__ = [
    "BOX_TYPE",
    "DATASETS",
    "QTYPES",
    "REJECT_SCHEMA",
    "SAMPLE_SCHEMA",
    "FpsSource",
    "RejectReason",
    "reject_table",
    "sample_table",
]
