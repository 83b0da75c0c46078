"""Write WebDataset shards: each video decoded once with decord, only the frames its samples need.

One split of the normalized table (`cgstvg.data.schema.SAMPLE_SCHEMA` rows) becomes
`<out>/shard-000000.tar, shard-000001.tar, ...`, a `manifest.json` and a `rejects.parquet`.

A sample in a shard (WebDataset key = `sample_id`, which has no dots):
- `<key>.000.jpg`, `<key>.001.jpg`, ...: the sampled frames, RGB, resized (see `cgstvg.data.resize`), JPEG;
- `<key>.json`: `sample_id, dataset, split, video_id, video_path, source, sentence, qtype, target_id, fps,
  frame_count, segment [s, e], tube [s, e]` (original 0-based inclusive frame ids), `frame_ids` (original id of
  each stored frame), `orig_size [h, w]`, `size [h, w]` (stored frames), `gt_indices` (positions in `frame_ids`
  inside the tube), `boxes_cxcywh` (one per gt index, normalized to the frame), `boxes_xyxy` (original pixels),
  `policy`, `eval_passes` (2 on evaluation splits: frames are 2x dense, run `[0::2]` and `[1::2]`).

Determinism and resumption. Samples are ordered by (video_path, sample_id) before anything is decoded, so the
samples of one video are adjacent and each video is decoded once. Shards are filled in that order and closed
before a sample that would push them past `max_samples` or `max_bytes`; `max_samples` is lowered so a split has
at least `min_shards` shards. Tar members have a fixed mtime/uid/gid/owner/mode and sorted names, JPEG encoding
is deterministic, so the same inputs give byte-identical shards. After each shard a done-marker
(`shard-000000.done.json`) records its sha256 and a hash of everything that decided its bytes and its end (the
plan of its samples, their videos' fingerprints, `jpeg_quality`, the per-shard caps, and the sample that closed
it); a rerun keeps the leading shards whose marker, bytes and plan hash still match and rewrites from the first one
that does not, saying why, so the result never depends on what an earlier configuration left behind.

Bad videos never become blank frames: the sample goes to the rejects table (`RejectReason.MISSING_VIDEO,
EMPTY_VIDEO, UNDECODABLE_VIDEO, TOO_FEW_FRAMES, DECODE_ERROR`) with a message naming the file, and the split
goes on. So does a video that contradicts its annotation, decoded against the normalized row: `SIZE_MISMATCH`
(decoded width x height is not the annotated one: boxes are in annotated pixels, so a portrait video annotated as
landscape, or HC-STVG v2 `img_size` given as [width, height], would be squashed and its boxes clipped) and
`FRAME_COUNT_MISMATCH` (decodable frames differ from the annotated `frame_count`, HC-STVG `img_num` or VidSTG
`frame_count`, by more than `frame_count_slack`); the message names the video, both values and the record.

A split is planned (`plan_shards`: order, resume, one task per video still to decode), each task runs on its own
(`encode_task`, in any process), and the results, in task order, are written (`write_shards`); `write_split` runs
the three here, decoding over a process pool.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import math
import multiprocessing
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import cast

import pyarrow as pa
import torch
from tqdm import tqdm

from cgstvg.data.resize import normalized_cxcywh, resize_frames, resized_size, scale_boxes_xyxy
from cgstvg.data.sampling import TRAIN_SPLITS, sample_frame_ids
from cgstvg.data.schema import RejectReason, reject_table
from cgstvg.utils.atomic import write_json, write_parquet
from cgstvg.utils.hashing import sha256_file

SHARD_PATTERN = "shard-{:06d}.tar"
MAX_FRAMES_PER_SAMPLE = 1000  # member names carry three digits: 000.jpg .. 999.jpg
_TAR_OWNER = ""  # fixed tar header fields, so reruns are byte-identical
_TAR_MTIME = 0
_TAR_MODE = 0o444
FRAME_COUNT_SLACK = 2  # frames: decodable and annotated counts may differ by max(this, the fraction below)
FRAME_COUNT_SLACK_FRACTION = 0.01


@dataclass(frozen=True)
class ShardConfig:
    """The `shard` section of params.yaml, typed. See params.yaml for the meaning of each knob."""

    policy: dict[str, str]  # dataset -> sampling policy ('hcstvg', 'vidstg' or 'fixed')
    sampling: dict  # hcstvg_fps, vidstg_frames, fixed_frames, eval_multiplier
    short_side: int = 420
    max_long_side: int = 700
    resize_mode: str = "aspect"
    width_cap: float = 1.4
    jpeg_quality: int = 90
    max_samples: int = 256
    max_bytes: int = 1 << 30
    min_shards: int = 4
    workers: int = 2

    @classmethod
    def from_params(cls, section: dict) -> ShardConfig:
        resize = section["resize"]
        shards = section["shards"]
        return cls(
            policy=dict(section["policy"]),
            sampling=dict(section["sampling"]),
            short_side=int(resize["short_side"]),
            max_long_side=int(resize["max_long_side"]),
            resize_mode=str(resize["mode"]),
            width_cap=float(resize["width_cap"]),
            jpeg_quality=int(section["jpeg_quality"]),
            max_samples=int(shards["max_samples"]),
            max_bytes=int(shards["max_bytes"]),
            min_shards=int(shards["min_shards"]),
            workers=int(section["workers"]),
        )


# ---------------------------------------------------------------- planning (pure, before any decoding)


def plan_sample(row: dict, cfg: ShardConfig) -> dict:
    """The JSON metadata of one normalized row: sampled frame ids, sizes and boxes of the sampled GT frames."""
    where = f"sample {row['sample_id']!r} ({row['source']})"
    policy = cfg.policy.get(row["dataset"])
    if policy is None:
        raise KeyError(f"{where}: no sampling policy for dataset {row['dataset']!r} in shard.policy")
    if "." in row["sample_id"]:
        raise ValueError(f"{where}: a WebDataset key cannot contain '.'")
    n_tube = row["tube_end"] - row["tube_start"] + 1
    if len(row["boxes"]) != n_tube:
        raise ValueError(f"{where}: {len(row['boxes'])} boxes for a tube of {n_tube} frames")
    frame_ids = sample_frame_ids(
        cfg.sampling,
        policy=policy,
        split=row["split"],
        fps=row["fps"],
        segment_start=row["segment_start"],
        segment_end=row["segment_end"],
    )
    if len(frame_ids) > MAX_FRAMES_PER_SAMPLE:
        raise ValueError(f"{where}: {len(frame_ids)} sampled frames, at most {MAX_FRAMES_PER_SAMPLE} fit")
    orig = (int(row["height"]), int(row["width"]))
    size = resized_size(
        *orig, short_side=cfg.short_side, max_long_side=cfg.max_long_side, mode=cfg.resize_mode, width_cap=cfg.width_cap
    )
    gt_indices = [i for i, f in enumerate(frame_ids) if row["tube_start"] <= f <= row["tube_end"]]
    xyxy = torch.tensor(
        [row["boxes"][frame_ids[i] - row["tube_start"]] for i in gt_indices], dtype=torch.float64
    ).reshape(-1, 4)
    cxcywh = normalized_cxcywh(scale_boxes_xyxy(xyxy, orig, size), size)
    return {
        "sample_id": row["sample_id"],
        "dataset": row["dataset"],
        "split": row["split"],
        "video_id": row["video_id"],
        "video_path": row["video_path"],
        "source": row["source"],
        "sentence": row["sentence"],
        "qtype": row["qtype"],
        "target_id": row["target_id"],
        "fps": float(row["fps"]),
        "frame_count": int(row["frame_count"]),
        "segment": [int(row["segment_start"]), int(row["segment_end"])],
        "tube": [int(row["tube_start"]), int(row["tube_end"])],
        "frame_ids": frame_ids,
        "orig_size": list(orig),
        "size": list(size),
        "gt_indices": gt_indices,
        "boxes_cxcywh": [[round(v, 6) for v in b] for b in cxcywh.tolist()],
        "boxes_xyxy": [[round(v, 3) for v in b] for b in xyxy.tolist()],
        "policy": policy,
        "eval_passes": 1 if row["split"] in TRAIN_SPLITS else int(cfg.sampling["eval_multiplier"]),
    }


def plan_split(table: pa.Table, cfg: ShardConfig) -> list[dict]:
    """Metadata of every row, ordered by (video_path, sample_id): the order of the shards."""
    rows = sorted(table.to_pylist(), key=lambda r: (r["video_path"], r["sample_id"]))
    for a, b in zip(rows, rows[1:]):
        if a["sample_id"] == b["sample_id"]:
            raise ValueError(f"duplicate sample_id {a['sample_id']!r} ({a['source']}, {b['source']})")
    return [plan_sample(r, cfg) for r in rows]


_FINGERPRINT_BYTES = 1 << 20


def _video_fingerprint(path: Path) -> list:
    """Size and a sha256 of the first and last MiB of a video, so a changed file invalidates the shards made from
    it. Content, not mtime: the markers live in the DVC-tracked output, whose hash must not depend on when (or in
    which clone) the videos were written; reading 2 MiB per video stays cheap on real datasets."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            digest = hashlib.sha256(f.read(_FINGERPRINT_BYTES))
            if size > 2 * _FINGERPRINT_BYTES:
                f.seek(-_FINGERPRINT_BYTES, 2)
            digest.update(f.read())
    except FileNotFoundError:
        return [-1, ""]
    return [size, digest.hexdigest()[:32]]


def _plan_hash(plan: list[dict], start: int, end: int, fingerprints: dict[str, list], cfg: ShardConfig) -> str:
    """A hash of what decides the bytes of the shard covering `plan[start:end]`: its records and videos, the JPEG
    quality, and where it ends: the caps (`max_samples`, `min_shards` and the split's size give `cap`;
    `max_bytes`) and the sample that closed it (`plan[end]`, None for the last shard)."""
    records = plan[start:end]
    following = plan[end] if end < len(plan) else None
    payload = {
        "records": records,
        "videos": [fingerprints[r["video_path"]] for r in records],
        "jpeg_quality": cfg.jpeg_quality,
        "cap": _max_samples_per_shard(len(plan), cfg),
        "max_bytes": cfg.max_bytes,
        "next": None if following is None else [following, fingerprints[following["video_path"]]],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------- decoding (runs in the worker processes)


@dataclass
class Encoded:
    """One sample ready for the tar (`members`), or a reject (`reason`, `message`)."""

    sample_id: str
    members: dict[str, bytes] | None = None
    reason: str | None = None
    message: str | None = None


_LOG_TIME = re.compile(r"\[\d{2}:\d{2}:\d{2}\] ")


def _decord_error(exc: Exception) -> str:
    """decord's error text without the wall-clock time its logger prefixes ("[01:29:40] "): the message goes into
    the rejects table and the markers, which must not depend on when a run happened."""
    return _LOG_TIME.sub("", str(exc))


def frame_count_slack(frame_count: int) -> int:
    """How far the decodable frame count may stray from the annotated `frame_count` before the sample is rejected:
    `FRAME_COUNT_SLACK` frames or 1% of the count, whichever is more. Counts of one file differ between tools by a
    frame or a few (a container's nb_frames against the packets decord indexes, a last packet that does not decode,
    an edit list), more on long videos; 1% keeps the sampled timestamps within 0.2 s on a 20 s clip. A larger gap
    means the annotation describes another cut of the video."""
    return max(FRAME_COUNT_SLACK, math.ceil(FRAME_COUNT_SLACK_FRACTION * frame_count))


def _record_check(r: dict, n_frames: int, path: Path) -> Encoded | None:
    """The reject of one record that the decodable frame count alone decides, else None."""
    needed = max(max(r["frame_ids"]), r["tube"][1]) + 1
    if n_frames < needed:
        return Encoded(
            r["sample_id"],
            reason=RejectReason.TOO_FEW_FRAMES.value,
            message=f"{path}: {n_frames} decodable frames, the sample needs frame {needed - 1} "
            f"(annotation says {r['frame_count']} frames)",
        )
    slack = frame_count_slack(r["frame_count"])
    if abs(n_frames - r["frame_count"]) > slack:
        return Encoded(
            r["sample_id"],
            reason=RejectReason.FRAME_COUNT_MISMATCH.value,
            message=f"{path}: {n_frames} decodable frames, but the annotation of sample {r['sample_id']!r} "
            f"({r['source']}) says {r['frame_count']} frames (tolerance {slack})",
        )
    return None


def _size_check(r: dict, decoded: tuple[int, int], path: Path) -> Encoded | None:
    """A `size_mismatch` reject when the decoded frames (height, width) are not the annotation's size, else None."""
    (h, w), (ah, aw) = decoded, r["orig_size"]
    if (h, w) == (ah, aw):
        return None
    return Encoded(
        r["sample_id"],
        reason=RejectReason.SIZE_MISMATCH.value,
        message=f"{path}: decoded frames are {w}x{h} (width x height), but the annotation of sample "
        f"{r['sample_id']!r} ({r['source']}) says {aw}x{ah}",
    )


def encode_video_samples(video_file: str, records: list[dict], jpeg_quality: int) -> list[Encoded]:
    """Decode the frames that `records` (samples of one video) need, resize and JPEG-encode them.

    The decord reader is opened here, in the worker process, and decodes only the requested frames
    (`get_batch`), at native resolution; every failure becomes a reject naming the file, and so does a video that
    does not match its annotation: a decodable frame count off by more than `frame_count_slack`, or decoded frames
    of another width x height than the annotation's (boxes and resizing assume the annotated size).
    """
    import decord  # imported in the worker: decord readers must not cross a fork
    from torchvision.io import encode_jpeg

    torch.set_num_threads(1)
    path = Path(video_file)

    def reject_all(reason: RejectReason, message: str) -> list[Encoded]:
        return [Encoded(r["sample_id"], reason=reason.value, message=message) for r in records]

    if not path.is_file():
        return reject_all(RejectReason.MISSING_VIDEO, f"{path}: no such file")
    if path.stat().st_size == 0:
        return reject_all(RejectReason.EMPTY_VIDEO, f"{path}: file is empty (0 bytes)")
    try:
        reader = decord.VideoReader(str(path), num_threads=1)
        n_frames = len(reader)
    except Exception as e:  # decord raises RuntimeError/DECORDError with ffmpeg's text
        return reject_all(RejectReason.UNDECODABLE_VIDEO, f"{path}: cannot open: {_decord_error(e)}".strip())
    out = []
    for r in records:
        rejected = _record_check(r, n_frames, path)
        if rejected is not None:
            out.append(rejected)
            continue
        unique = sorted(set(r["frame_ids"]))
        try:
            batch = reader.get_batch(unique).asnumpy()
        except Exception as e:
            out.append(
                Encoded(
                    r["sample_id"],
                    reason=RejectReason.DECODE_ERROR.value,
                    message=f"{path}: decoding frames {unique[0]}..{unique[-1]} failed: {_decord_error(e)}".strip(),
                )
            )
            continue
        rejected = _size_check(r, batch.shape[1:3], path)
        if rejected is not None:
            out.append(rejected)
            continue
        frames = resize_frames(torch.from_numpy(batch).permute(0, 3, 1, 2), tuple(r["size"]))
        jpegs = dict(zip(unique, encode_jpeg(list(frames.contiguous()), quality=jpeg_quality)))
        members = {f"{i:03d}.jpg": jpegs[f].numpy().tobytes() for i, f in enumerate(r["frame_ids"])}
        members["json"] = json.dumps(r, sort_keys=True, separators=(",", ":")).encode()
        out.append(Encoded(r["sample_id"], members=members))
    return out


EncodeTask = tuple[str, list[dict], int]
"""One video's work: (video file, the records of its samples still to shard, JPEG quality)."""


def encode_task(task: EncodeTask) -> list[Encoded]:
    """Run one task of `ShardWork.tasks` (`encode_video_samples`); module-level, so any worker process can run it."""
    return encode_video_samples(*task)


def encode_in_pool(tasks: Sequence[EncodeTask], workers: int) -> Iterator[list[Encoded]]:
    """`encode_task` of every task, in task order, over a process pool of `workers` (in this process when 0)."""
    if workers <= 0:
        yield from map(encode_task, tasks)
        return
    # fork, as torch's DataLoader does: no re-import per worker and no `__main__` guard needed in callers; decord
    # is only ever imported inside the workers, so no reader state is inherited
    ctx = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        yield from pool.map(encode_task, tasks, chunksize=1)


# ---------------------------------------------------------------- writing


class _ShardFile:
    """One shard being written: samples are streamed into a hidden temporary file, renamed when closed."""

    def __init__(self, path: Path):
        from webdataset import TarWriter

        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp")
        self.file = open(self.tmp, "wb")
        self.tar = TarWriter(
            self.file, user=_TAR_OWNER, group=_TAR_OWNER, mode=_TAR_MODE, mtime=_TAR_MTIME, encoder=False
        )
        self.samples = 0

    def write(self, sample: Encoded) -> None:
        self.tar.write({"__key__": sample.sample_id, **cast(dict[str, bytes], sample.members)})  # not a reject
        self.samples += 1

    def close(self) -> tuple[int, str]:
        """Finish the tar, move it in place; returns (bytes, sha256)."""
        self.tar.close()
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.path)
        return self.path.stat().st_size, sha256_file(self.path)


def _sample_bytes(s: Encoded) -> int:
    """Tar bytes of one sample: a 512-byte header per member plus the payload padded to 512."""
    return sum(512 + -(-len(v) // 512) * 512 for v in cast(dict[str, bytes], s.members).values())


def _max_samples_per_shard(n: int, cfg: ShardConfig) -> int:
    # floor(n / min_shards) samples per shard gives at least min_shards shards
    return max(1, min(cfg.max_samples, n // max(1, cfg.min_shards)))


def _stale_reason(tar: Path, marker: Path, plan: list[dict], cursor: int, fingerprints, cfg: ShardConfig) -> str | None:
    """Why the shard `tar` (the next one after `plan[:cursor]`) cannot be kept; None when it can."""
    if not (tar.is_file() and marker.is_file()):
        return "it has no marker (its run was interrupted)" if tar.is_file() else "its marker has no tar"
    try:
        m = json.loads(marker.read_text())
        end = cursor + len(m["consumed"])
        planned = [r["sample_id"] for r in plan[cursor:end]] == m["consumed"]
        if not planned or m["plan_hash"] != _plan_hash(plan, cursor, end, fingerprints, cfg):
            return "written for another plan (table, videos or shard params changed)"
    except (ValueError, KeyError, TypeError):
        return "its marker is unreadable"
    if tar.stat().st_size != m["bytes"] or sha256_file(tar) != m["sha256"]:
        return "its bytes differ from its marker (damaged)"
    return None


def _resume(out_dir: Path, plan: list[dict], fingerprints, cfg: ShardConfig) -> tuple[list[dict], int]:
    """Markers of the leading shards that are intact and still match the plan; removes everything after them."""
    kept: list[dict] = []
    cursor = 0
    while True:
        name = SHARD_PATTERN.format(len(kept))
        tar, marker = out_dir / name, out_dir / (name[:-4] + ".done.json")
        if not (tar.is_file() or marker.is_file()):
            break
        reason = _stale_reason(tar, marker, plan, cursor, fingerprints, cfg)
        if reason is not None:  # discarded with everything after it: say why
            print(f"shard: {tar}: {reason}; rewriting the split from this shard on")
            break
        m = json.loads(marker.read_text())
        kept.append(m)
        cursor += len(m["consumed"])
    for stale in [*out_dir.glob("shard-*"), *out_dir.glob(".shard-*.tmp")]:
        if stale.name.startswith(".") or int(stale.name[6:12]) >= len(kept):
            stale.unlink()
    return kept, cursor


@dataclass
class ShardWork:
    """One split's plan (`plan_shards`): the records in shard order, the video fingerprints, the markers of the
    shards kept from an earlier run (covering the first `cursor` records) and the videos still to encode."""

    out_dir: Path
    cfg: ShardConfig
    plan: list[dict]
    fingerprints: dict[str, list]
    markers: list[dict]
    cursor: int
    tasks: list[EncodeTask]


def plan_shards(
    table: pa.Table, raw_root: str | os.PathLike, out_dir: str | os.PathLike, cfg: ShardConfig
) -> ShardWork:
    """Plan one split (all rows of `table` share dataset and split) and resume it: the leading shards of an earlier
    run that still match are kept, everything after them is removed; `tasks` hold the rest, one per video."""
    out_dir, raw_root = Path(out_dir), Path(raw_root)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = plan_split(table, cfg)
    fingerprints = {p: _video_fingerprint(raw_root / p) for p in {r["video_path"] for r in plan}}
    markers, cursor = _resume(out_dir, plan, fingerprints, cfg)
    tasks = [
        (str(raw_root / video), list(recs), cfg.jpeg_quality)
        for video, recs in groupby(plan[cursor:], key=lambda r: r["video_path"])
    ]
    return ShardWork(out_dir, cfg, plan, fingerprints, markers, cursor, tasks)


def write_shards(work: ShardWork, results: Iterable[list[Encoded]], *, progress: bool = True) -> dict:
    """Finish a split: stream `encode_task`'s results for `work.tasks` (in task order, from any map) into the shards
    and their markers, then write the rejects table and the manifest; returns the manifest. The bytes do not
    depend on where the tasks ran."""
    out_dir, cfg, plan, fingerprints = work.out_dir, work.cfg, work.plan, work.fingerprints
    markers, cursor = list(work.markers), work.cursor
    cap = _max_samples_per_shard(len(plan), cfg)
    shard: _ShardFile | None = None
    pending: list[Encoded] = []  # written and rejected samples of the open shard, in plan order (no frames)
    shard_bytes = 0

    def close_shard():
        nonlocal cursor, shard
        open_shard = cast(_ShardFile, shard)  # called only while a shard is open
        n_bytes, sha = open_shard.close()
        marker = {
            "name": open_shard.path.name,
            "samples": open_shard.samples,
            "bytes": n_bytes,
            "sha256": sha,
            "consumed": [s.sample_id for s in pending],
            "plan_hash": _plan_hash(plan, cursor, cursor + len(pending), fingerprints, cfg),
            "rejects": [
                {"sample_id": s.sample_id, "reason": s.reason, "message": s.message}
                for s in pending
                if s.members is None
            ],
        }
        write_json(out_dir / (open_shard.path.name[:-4] + ".done.json"), marker)
        markers.append(marker)
        cursor += len(pending)
        pending.clear()
        shard = None

    todo = len(plan) - work.cursor
    bar = tqdm(total=todo, desc=f"shard {out_dir.parent.name}/{out_dir.name}", unit="sample", disable=not progress)
    for encoded in results:
        for s in encoded:
            if s.members is not None:
                size = _sample_bytes(s)
                if shard is not None and (shard.samples >= cap or shard_bytes + size > cfg.max_bytes):
                    close_shard()
                if shard is None:
                    shard, shard_bytes = _ShardFile(out_dir / SHARD_PATTERN.format(len(markers))), 0
                shard.write(s)
                shard_bytes += size
                s = Encoded(s.sample_id, members={})  # written: the frames are on disk now, keep only the id
            pending.append(s)
            bar.update(1)
    bar.close()
    if shard is not None:
        close_shard()
    trailing = [{"sample_id": s.sample_id, "reason": s.reason, "message": s.message} for s in pending]
    return _finish_split(out_dir, plan, markers, trailing)


def write_split(
    table: pa.Table,
    raw_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg: ShardConfig,
    *,
    progress: bool = True,
) -> dict:
    """Shard one split here, decoding over a pool of `cfg.workers` processes: `plan_shards`, `encode_task` per
    video, `write_shards`. Resumable (see `plan_shards`); returns the manifest it writes."""
    work = plan_shards(table, raw_root, out_dir, cfg)
    return write_shards(work, encode_in_pool(work.tasks, cfg.workers), progress=progress)


def _finish_split(out_dir: Path, plan: list[dict], markers: list[dict], trailing_rejects: list[dict]) -> dict:
    """Write `rejects.parquet` and `manifest.json` for a split whose shards are all written."""
    by_id = {r["sample_id"]: r for r in plan}
    rejects = [rj for m in markers for rj in m["rejects"]] + trailing_rejects
    write_parquet(
        out_dir / "rejects.parquet",
        reject_table(
            [
                {
                    "dataset": by_id[rj["sample_id"]]["dataset"],
                    "split": by_id[rj["sample_id"]]["split"],
                    "sample_id": rj["sample_id"],
                    "source": by_id[rj["sample_id"]]["source"],
                    "reason": rj["reason"],
                    "message": rj["message"],
                }
                for rj in rejects
            ]
        ),
    )
    rejected = {rj["sample_id"] for rj in rejects}
    kept = [r for r in plan if r["sample_id"] not in rejected]
    frames = [len(r["frame_ids"]) for r in kept]
    manifest = {
        "samples": sum(m["samples"] for m in markers),
        "rejected": len(rejects),
        "bytes": sum(m["bytes"] for m in markers),
        "shards": [{k: m[k] for k in ("name", "samples", "bytes", "sha256")} for m in markers],
        "frames_per_sample": {"min": min(frames, default=0), "max": max(frames, default=0)},
        "samples_without_gt_frame": sum(1 for r in kept if not r["gt_indices"]),
        "eval_passes": max((r["eval_passes"] for r in kept), default=1),
    }
    if plan:
        manifest.update(dataset=plan[0]["dataset"], split=plan[0]["split"])
    write_json(out_dir / "manifest.json", manifest)
    return manifest


__all__ = [
    "SHARD_PATTERN",
    "EncodeTask",
    "Encoded",
    "ShardConfig",
    "ShardWork",
    "encode_in_pool",
    "encode_task",
    "encode_video_samples",
    "frame_count_slack",
    "plan_sample",
    "plan_shards",
    "plan_split",
    "write_shards",
    "write_split",
]
