"""The fault registry of issue 16: each kind of fault, how to build it on small data, and what must be seen.

A kind's probe builds the fault in a fresh folder, runs what reads it, and checks the outcome with the helpers below;
`run_kind` classifies what happened:
- `handled`: the expected outcome (a reject with its reason, a one-line error naming the file, a byte-identical
  rerun, a refusal);
- `unclear`: the fault was noticed, but not as expected (a message that does not name the file, several lines, an
  error where a reject was due);
- `silent`: nothing noticed: the run went on with the damaged or wrong input;
- `crash`: an exception other than the one-line error escaped (what a user sees as a traceback).

`tests/faults/test_faults.py` parametrizes pytest over `KINDS` (the `fast` ones in the normal run, the rest under
`-m faults`); `bench/faults.py` runs them all and prints the counts as JSON.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import torch
import yaml

from cgstvg.data.schema import sample_table
from cgstvg.data.shard_writer import write_split
from cgstvg.engine.checkpoint import list_checkpoints
from cgstvg.utils.hashing import sha256_file
from pipeline_support import REPO, run_command, stage_args, tiny_params, write_params
from pipeline_support import run_stage as run_stage_module
from test_decode_checks import CFG as DECODE_CFG
from test_decode_checks import _with_second_box
from test_end_to_end import STAGES, _shard_extract_evaluate
from test_ground_checkpoint import _vfr_video
from test_normalize import hc_tree, hc_v1, hc_v2_raw, put, vid_entry, vid_tree, vidor_file
from test_train_resume import differing_training_files
from test_verify_on_read import _drop_last_shard, _edit_json, _flip_motion_payload, _flip_tensor_bit
from test_write_errors import LIMITED
from video_samples import sample_row, write_video

OUTCOMES = ("handled", "unclear", "silent", "crash")


class Silent(Exception):
    """The fault went unnoticed."""


class Unclear(Exception):
    """The fault was noticed, but the outcome is not the expected one."""


@dataclasses.dataclass(frozen=True)
class Kind:
    name: str
    group: str  # the audit's class: silent, crash, unclear, handled (found well handled), extra (added since)
    expect: str  # what must be seen
    probe: Callable[[Context, Path], str | None]
    fast: bool = True  # in the normal pytest run (the others under `-m faults` and in bench/faults.py)


@dataclasses.dataclass
class Result:
    name: str
    group: str
    outcome: str
    detail: str
    seconds: float


class Context:
    """Shared small inputs, built once on first use under `root`: the tiny pipeline run through evaluate, and a
    tiny grounding checkpoint with its video."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._base: Path | None = None
        self._ground: dict | None = None

    def base(self) -> Path:
        if self._base is None:
            d = self.root / "_base"
            d.mkdir(parents=True)
            params = write_params(d, BASE_PARAMS)
            for stage in STAGES:
                quiet(run_stage_module, stage, d, params)
            self._base = d
        return self._base

    def copy_base(self, work: Path, *stages: str) -> Path:
        """The base pipeline's params and the outputs of `stages` (all when none) copied into `work`."""
        base = self.base()
        shutil.copy(base / "params.yaml", work / "params.yaml")
        if "train" in stages and "normalize" not in stages:
            stages += ("normalize",)  # the ground truth of train's held-out validation (train.validation)
        for stage in stages or STAGES:
            shutil.copytree(base / "out" / stage, work / "out" / stage)
        return work / "params.yaml"

    def ground(self) -> dict:
        if self._ground is None:
            from ground_support import make_checkpoint, make_tokenizer, make_video

            d = self.root / "_ground"
            d.mkdir(parents=True)
            tokenizer = make_tokenizer(d / "tokenizer")
            self._ground = {
                "ckpt": make_checkpoint(d / "model.pt", tokenizer),
                "video": make_video(d / "clip.mp4"),
                "tokenizer": tokenizer,
            }
        return self._ground


# every checkpoint kept: the resume kinds restart from an earlier one
BASE_PARAMS = tiny_params(train={"keep_checkpoints": 10})


def run_kind(kind: Kind, ctx: Context) -> Result:
    work = ctx.root / kind.name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    start = time.monotonic()
    try:
        detail, outcome = kind.probe(ctx, work) or "as expected", "handled"
    except Silent as err:
        detail, outcome = str(err), "silent"
    except Unclear as err:
        detail, outcome = str(err), "unclear"
    except SystemExit as err:  # a one-line stop where none was expected
        detail, outcome = f"stopped: {err.code}", "unclear"
    except Exception as err:
        last = traceback.extract_tb(err.__traceback__)[-1]
        detail, outcome = f"{type(err).__name__}: {err} ({last.filename}:{last.lineno})", "crash"
    return Result(kind.name, kind.group, outcome, detail[:500], round(time.monotonic() - start, 2))


def summary(results: list[Result]) -> dict:
    counts = {outcome: sum(r.outcome == outcome for r in results) for outcome in OUTCOMES}
    return {"kinds": len(results), **counts, "not_handled": [r.name for r in results if r.outcome != "handled"]}


# ------------------------------------------------------------------------------------------------ outcome checks


def quiet(fn, *args, **kwargs):
    """Call fn with its prints (progress lines of the stages) swallowed."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


def one_line(message: str, *names) -> str:
    message = str(message).strip()
    if "\n" in message:
        raise Unclear(f"the error is {message.count(chr(10)) + 1} lines: {message[:300]}")
    missing = [str(n) for n in names if str(n) not in message]
    if missing:
        raise Unclear(f"the error does not name {missing}: {message}")
    return message


def stops(fn, *names) -> str:
    """fn must stop as a stage's command line does: SystemExit with one line (exit status 1) naming `names`."""
    try:
        quiet(fn)
    except SystemExit as err:
        if not isinstance(err.code, str):
            raise Unclear(f"exit status {err.code!r} without a message") from None
        return one_line(err.code, *names)
    raise Silent("ran to the end without an error")


def stage(name: str, work: Path, params: Path):
    """A stage as its `python -m pipeline.<stage>` runs it (the one-line error handling included)."""
    import pipeline

    return lambda: pipeline.run_stage(name, lambda: run_stage_module(name, work, params))


def process_fails(cmd: list[str], *names, cwd: Path | None = None, timeout: float = 240) -> str:
    """A process must exit with status 1 and one stderr line naming `names`, no traceback."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", CGSTVG_DEBUG="")
    proc = subprocess.run(cmd, cwd=cwd or REPO, env=env, capture_output=True, text=True, timeout=timeout)
    err = proc.stderr.strip()
    if proc.returncode == 0:
        raise Silent(f"exit status 0: {proc.stdout[-300:]}")
    if "Traceback" in err:
        raise RuntimeError(f"exit status {proc.returncode} with a traceback: {err[-400:]}")
    if proc.returncode != 1:
        raise Unclear(f"exit status {proc.returncode}: {err[-300:]}")
    return one_line(err, *names)


def rejected(rejects: list[dict], rows: list[str], sample_id: str, reason: str, *names) -> str:
    """`sample_id` must be rejected for `reason`, the message naming `names`."""
    found = [r for r in rejects if r["sample_id"] == sample_id]
    if not found:
        if sample_id in rows:
            raise Silent(f"{sample_id!r} kept as a good sample")
        raise Unclear(f"{sample_id!r} neither kept nor rejected (rejects: {[r['sample_id'] for r in rejects]})")
    if found[0]["reason"] != reason:
        raise Unclear(f"{sample_id!r} rejected for {found[0]['reason']}, not {reason}")
    missing = [str(n) for n in names if str(n) not in found[0]["message"]]
    if missing:
        raise Unclear(f"the reject message does not name {missing}: {found[0]['message']}")
    return f"{reason}: {found[0]['message']}"


def files_of(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def identical(a: Path, b: Path, skip: tuple[str, ...] = ()) -> str:
    one = {k: v for k, v in files_of(a).items() if not k.endswith(skip)}
    other = {k: v for k, v in files_of(b).items() if not k.endswith(skip)}
    differ = sorted(k for k in one.keys() | other.keys() if one.get(k) != other.get(k))
    if differ:
        raise Silent(f"{len(differ)} file(s) differ from a clean run: {differ[:5]}")
    return f"{len(one)} files byte-identical to a clean run"


# ---------------------------------------------------------------------------------------------------- builders


def normalize_raw(work: Path, build: Callable[[Path], None], datasets=("hcstvg_v1",)):
    """A raw tree built by `build` and `pipeline.normalize` as the stage runs; returns a thunk for `stops`."""
    from pipeline import normalize

    root = work / "raw"
    root.mkdir(exist_ok=True)
    build(root)
    params = put(work / "params.yaml", yaml.safe_dump({"normalize": {"raw_root": str(root), "datasets": [*datasets]}}))
    return lambda: normalize.main(["--raw", str(root), "--out", str(work / "out"), "--params", str(params)])


def normalized(work: Path, build: Callable[[Path], None], datasets=("hcstvg_v1",)) -> tuple[list[dict], list[str]]:
    """normalize on a raw tree: (rejects, kept sample ids) over all splits."""
    quiet(normalize_raw(work, build, datasets))
    out = work / "out"
    rejects = pq.read_table(out / "rejects.parquet").to_pylist() if (out / "rejects.parquet").exists() else []
    rows = [r for p in out.glob("*/*.parquet") for r in pq.read_table(p, columns=["sample_id"]).column(0).to_pylist()]
    return rejects, rows


def sharded(work: Path, videos: dict[str, Callable[[Path], object]], rows: list[dict]) -> tuple[list[dict], list]:
    """write_split of `rows` over videos made by `videos` (path -> maker): (rejects, kept sample ids)."""
    root = work / "raw"
    for name, make in videos.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        make(root / name)
    out = work / "shard"
    manifest = write_split(sample_table(rows), root, out, DECODE_CFG, progress=False)
    kept = [k for s in manifest["shards"] for k in _tar_keys(out / s["name"])]
    return pq.read_table(out / "rejects.parquet").to_pylist(), kept


def _tar_keys(path: Path) -> list[str]:
    with tarfile.open(path) as tar:
        return sorted({m.name.split(".", 1)[0] for m in tar})


def video(frames=32, **kw):
    return lambda path: write_video(path, frames, **kw)


def rehash(split: Path, tar: Path) -> None:
    """Record a changed shard's size and sha256 in its manifest, as if its writer had written it so: only what
    reads its contents can tell."""

    def edit(manifest):
        entry = next(s for s in manifest["shards"] if s["name"] == tar.name)
        entry.update(bytes=tar.stat().st_size, sha256=sha256_file(tar))

    _edit_json(split / "manifest.json", edit)


def rewrite_tar(tar: Path, change: Callable[[str, bytes], tuple[str, bytes] | None], extra=()) -> None:
    """Rewrite a tar member by member through `change(name, data)` (None drops it), then append `extra` members."""
    members = []
    with tarfile.open(tar) as src:
        for m in src:
            f = src.extractfile(m)
            item = change(m.name, f.read() if f else b"")
            if item is not None:
                members.append(item)
    members += list(extra)
    with tarfile.open(tar, "w", format=tarfile.USTAR_FORMAT) as dst:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))


def with_params(work: Path, edit: Callable[[dict], None]) -> Path:
    params = json.loads(json.dumps(BASE_PARAMS))
    edit(params)
    return write_params(work, params)


def ground_cli(*args: str) -> tuple[int, str]:
    """`cgstvg ground` in this process: (exit status, stderr)."""
    from cgstvg.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["ground", *args, "--device", "cpu"])
    return code, err.getvalue()


def ground_fails(ctx: Context, *names, video: Path | None = None, ckpt: Path | None = None, extra=()) -> str:
    g = ctx.ground()
    code, err = ground_cli("--video", str(video or g["video"]), "--text", "the blue square moves left",
                           "--checkpoint", str(ckpt or g["ckpt"]), *extra)  # fmt: skip
    if code == 0:
        raise Silent("grounded without an error")
    if code != 1:
        raise Unclear(f"exit status {code}: {err}")
    return one_line(err, "cgstvg ground: error: ", *names)


class _Payload:
    """An object whose unpickling creates a file: what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (builtins.open, (str(self.marker), "w"))


def kill_during(cmd: list[str], cwd: Path, started: Callable[[], bool], timeout: float = 240) -> None:
    """Run `cmd`, SIGKILL it once `started()` holds (it must not have finished by then)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while not started():
            if proc.poll() is not None:
                raise Unclear("the run ended before it could be killed")
            if time.monotonic() > deadline:
                raise Unclear(f"not started after {timeout} s")
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def module_command(stage_name: str, params: Path) -> list[str]:
    return [sys.executable, "-m", f"pipeline.{stage_name}", *stage_args(stage_name, Path("out")), "--params",
            str(params)]  # fmt: skip


# ------------------------------------------------------------------------------------------------------ probes
# Each returns a short note of what was seen (or None), or raises Silent / Unclear.


def _params_kind(edit: Callable[[dict], None], *names) -> Callable[[Context, Path], str]:
    def probe(ctx: Context, work: Path) -> str:
        path = with_params(work, edit)
        return stops(stage("train", work, path), f"train: {path}:", *names)

    return probe


def _malformed_hc(text: str, *names) -> Callable[[Context, Path], str]:
    def probe(ctx: Context, work: Path) -> str:
        path = work / "raw" / "hcstvg_v1" / "annos" / "train.json"
        return stops(normalize_raw(work, lambda root: put(path, text)), f"normalize: {path}:", *names)

    return probe


def _malformed_vid(change: Callable[[list, dict], object], in_box: bool, *names) -> Callable[[Context, Path], str]:
    def probe(ctx: Context, work: Path) -> str:
        entries, box = [vid_entry("1"), vid_entry("2")], vidor_file()
        change(entries, box)
        fn = normalize_raw(work, lambda root: vid_tree(root, "val", entries, box_files={"1": vidor_file(), "2": box}),
                           ("vidstg",))  # fmt: skip
        raw = work / "raw" / "vidstg"
        path = raw / "bbox_annos" / "2.json" if in_box else raw / "sent_annos" / "val_annotations.json"
        return stops(fn, f"normalize: {path}:", *names)

    return probe


def _unreadable_annotation(kind: str) -> Callable[[Context, Path], str]:
    def probe(ctx: Context, work: Path) -> str:
        path = work / "raw" / "hcstvg_v1" / "annos" / "train.json"

        def build(root):
            path.parent.mkdir(parents=True)
            path.mkdir() if kind == "directory" else path.symlink_to(path.name)

        return stops(normalize_raw(work, build), f"normalize: {path}: file: cannot be read")

    return probe


def _hc_reject(records: dict, sample_id: str, reason: str, *names, videos=None) -> Callable[[Context, Path], str]:
    def probe(ctx: Context, work: Path) -> str:
        rejects, rows = normalized(work, lambda root: hc_tree(root, "hcstvg_v1", "train", records, videos=videos))
        return rejected(rejects, rows, sample_id, reason, *names)

    return probe


def path_escape(ctx: Context, work: Path) -> str:
    def build(root):
        hc_tree(root, "hcstvg_v1", "train", {"../x.mp4": hc_v1(), "/etc/y.mp4": hc_v1(), "ok.mp4": hc_v1()}, [])
        put(root / "hcstvg_v1" / "videos" / "ok.mp4", "")
        put(root / "hcstvg_v1" / "x.mp4", "")  # exists, outside the videos folder

    rejects, rows = normalized(work, build)
    if sorted(rows) != ["ok"]:
        raise Silent(f"kept {rows}")
    if sorted(r["reason"] for r in rejects) != ["path_escapes_root"] * 2:
        raise Unclear(f"rejects {[(r['sample_id'], r['reason']) for r in rejects]}")
    return "both escaping paths rejected path_escapes_root"


def path_escape_vidstg(ctx: Context, work: Path) -> str:
    def build(root):
        vid_tree(root, "val", [vid_entry("1"), vid_entry("../../escape")],
                 box_files={"1": vidor_file(video_path="../../x.mp4")})  # fmt: skip

    rejects, rows = normalized(work, build, ("vidstg",))
    if rows:
        raise Silent(f"kept {rows}")
    if {r["reason"] for r in rejects} != {"path_escapes_root"} or len(rejects) != 4:
        raise Unclear(f"rejects {[(r['sample_id'], r['reason']) for r in rejects]}")
    return "4 pairs rejected path_escapes_root"


def duplicate_box(ctx: Context, work: Path) -> str:
    entry = vid_entry(questions=[{"description": "who is chased?", "type": "person", "target_id": 0}])
    box = _with_second_box(vidor_file(), tid=1, frame=14, shift=5)
    rejects, rows = normalized(work, lambda root: vid_tree(root, "val", [entry], box_files={"5000": box}), ("vidstg",))
    return rejected(rejects, rows, "5000-0-declar0", "duplicate_box", "frame 14", "bbox_annos/5000.json")


def duplicate_entry(ctx: Context, work: Path) -> str:
    rejects, rows = normalized(work, lambda root: vid_tree(root, "val", [vid_entry("1"), vid_entry("1")]), ("vidstg",))
    return rejected(rejects, rows, "1-1-declar0", "duplicate_entry", "repeats entry 0 verbatim")


def non_ascii_ids(ctx: Context, work: Path) -> str:
    _, rows = normalized(
        work, lambda root: hc_tree(root, "hcstvg_v1", "train", {"日本.mp4": hc_v1(), "中国.mp4": hc_v1()})
    )
    if len(set(rows)) != 2:
        raise Silent(f"two videos, ids {rows}")
    return f"ids {sorted(rows)}"


def vidstg_missing_video(ctx: Context, work: Path) -> str:
    rejects, rows = normalized(work, lambda root: vid_tree(root, "test", [vid_entry()], videos=[]), ("vidstg",))
    return rejected(rejects, rows, "5000-0-declar0", "missing_video", "videos/5000.mp4")


def vidstg_trajectory_hole(ctx: Context, work: Path) -> str:
    box = vidor_file(skip={1: [14]})
    rejects, rows = normalized(work, lambda root: vid_tree(root, "val", [vid_entry()], box_files={"5000": box}),
                               ("vidstg",))  # fmt: skip
    return rejected(rejects, rows, "5000-0-declar0", "trajectory_hole", "frame 14")


def _shard_reject(videos: dict, row: dict, reason: str, *names) -> Callable[[Context, Path], str]:
    def probe(ctx: Context, work: Path) -> str:
        good = sample_row("good", "videos/good.mp4")
        rejects, kept = sharded(work, {"videos/good.mp4": video(), **videos}, [good, row])
        if "good" not in kept:
            raise Unclear(f"the good sample was lost too: {rejects}")
        return rejected(rejects, kept, row["sample_id"], reason, *names)

    return probe


def _truncated(path: Path) -> None:
    data = write_video(path, 32).read_bytes()
    path.write_bytes(data[: len(data) // 2])


def v2_img_size_swapped(ctx: Context, work: Path) -> str:
    from cgstvg.data.normalize import normalize, write_outputs
    from pipeline import shard as shard_stage

    root = work / "raw"
    wide_box = [[70, 10, 50, 40]] * 3
    records = {"good.mp4": hc_v2_raw(img_num=32, img_size=[96, 128], bbox=wide_box),
               "swapped.mp4": hc_v2_raw(img_num=32, img_size=[128, 96], bbox=wide_box)}  # fmt: skip
    hc_tree(root, "hcstvg_v2", "val", records, videos=[])
    for key in records:
        write_video(root / "hcstvg_v2/videos" / key, 32, width=128, height=96)
    write_outputs(normalize(root, ["hcstvg_v2"]), work / "normalize")
    quiet(shard_stage.shard, work / "normalize", root, work / "shard", DECODE_CFG, progress=False)
    split = work / "shard/hcstvg_v2/val"
    kept = [k for p in split.glob("shard-*.tar") for k in _tar_keys(p)]
    rejects = pq.read_table(split / "rejects.parquet").to_pylist()
    return rejected(rejects, kept, "swapped", "size_mismatch", "swapped.mp4", "128x96", "96x128")


# ----------------------------------------------------------------------------------- verify on read (pipeline)


def checkpoint_bit_flip(ctx: Context, work: Path) -> str:
    params = ctx.copy_base(work, "shard", "extract", "train")
    checkpoints = work / "out/train/checkpoints"
    newest = list_checkpoints(checkpoints)[-1][1]
    _flip_tensor_bit(newest)
    (work / "out/train/model.pt").unlink()
    logs = io.StringIO()
    handler = logging.StreamHandler(logs)
    logging.getLogger("cgstvg.engine.checkpoint").addHandler(handler)
    try:
        result = quiet(run_stage_module, "train", work, params)
    finally:
        logging.getLogger("cgstvg.engine.checkpoint").removeHandler(handler)
    if result["resumed_from"] == int(newest.name[5:13]):
        raise Silent(f"resumed from the flipped {newest.name}")
    said = one_line(logs.getvalue(), f"not resuming from {newest.relative_to(work)}", "(changed)")
    return f"{said}; resumed from {result['resumed_from']}"


def train_resume_bytes(ctx: Context, work: Path) -> str:
    """Training stopped after a checkpoint (here: only the checkpoint of step 4 survives it) and resumed writes
    the uninterrupted run's checkpoints and model.pt, byte for byte."""
    params = ctx.copy_base(work, "normalize", "shard", "extract")
    src, dst = ctx.base() / "out/train/checkpoints", work / "out/train/checkpoints"
    dst.mkdir(parents=True)
    for name in ("step_00000004.pt", "step_00000004.pt.sha256"):
        shutil.copy(src / name, dst / name)
    result = quiet(run_stage_module, "train", work, params)
    if result["resumed_from"] != 4:
        raise Unclear(f"resumed from {result['resumed_from']}, not 4")
    # the base run keeps steps 2..12; the resumed one 4..12
    differ = [n for n in differing_training_files(ctx.base() / "out/train", work / "out/train") if "00000002" not in n]
    if differ:
        raise Silent(f"differ from the uninterrupted run: {differ}")
    return "checkpoints 4..12 and model.pt byte-identical"


def _damaged_split(damage: Callable[[Path], object], stage_name: str, *names) -> Callable[[Context, Path], str]:
    """The base outputs with `damage(work)` applied; `stage_name` must stop naming `names` (format with work)."""

    def probe(ctx: Context, work: Path) -> str:
        params = ctx.copy_base(work, "normalize", "shard", "extract", "train")
        damage(work)
        return stops(stage(stage_name, work, params), *(n.format(work=work) for n in names))

    return probe


def _drop_shard(work: Path) -> None:
    _edit_json(work / "out/shard/hcstvg_v1/train/manifest.json", _drop_last_shard)


def _one_sample_less(work: Path) -> None:
    def edit(manifest):
        manifest["shards"][0]["samples"] -= 1
        manifest["samples"] -= 1

    _edit_json(work / "out/shard/hcstvg_v1/train/manifest.json", edit)


def _remove_sample(work: Path) -> None:
    """One sample removed from a frame shard, its manifest entry rewritten to match: only the table can tell."""
    split = work / "out/shard/hcstvg_v1/test"
    tar = split / "shard-000000.tar"
    first = _tar_keys(tar)[0]
    rewrite_tar(tar, lambda name, data: None if name.split(".", 1)[0] == first else (name, data))

    def edit(manifest):
        manifest["shards"][0]["samples"] -= 1
        manifest["samples"] -= 1

    _edit_json(split / "manifest.json", edit)
    rehash(split, tar)


def _flip_frame_shard(work: Path) -> None:
    tar = work / "out/shard/hcstvg_v1/train/shard-000001.tar"
    data = bytearray(tar.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tar.write_bytes(data)


def _corrupt_jpeg(rehashed: bool) -> Callable[[Path], None]:
    def damage(work: Path) -> None:
        split = work / "out/shard/hcstvg_v1/test"
        tar = split / "shard-000000.tar"
        done = []

        def change(name, data):
            if name.endswith(".jpg") and not done:
                done.append(name)
                return name, data[:20] + bytes(len(data) - 20)  # the header kept, the scan data zeroed
            return name, data

        rewrite_tar(tar, change)
        if rehashed:
            rehash(split, tar)

    return damage


def _flip_tar_header(rehashed: bool) -> Callable[[Path], None]:
    def damage(work: Path) -> None:
        split = work / "out/shard/hcstvg_v1/test"
        tar = split / "shard-000000.tar"
        with tarfile.open(tar) as t:
            second = t.getmembers()[1]
        data = bytearray(tar.read_bytes())
        data[second.offset : second.offset + 8] = b"\xff" * 8  # the member's name field
        data[second.offset + 124 : second.offset + 130] = b"zzzzzz"  # its size field
        tar.write_bytes(data)
        if rehashed:
            rehash(split, tar)

    return damage


def _dotdot_member(work: Path) -> None:
    split = work / "out/shard/hcstvg_v1/test"
    tar = split / "shard-000000.tar"
    rewrite_tar(tar, lambda name, data: (name, data), extra=[("../../escape.jpg", b"x" * 100)])
    rehash(split, tar)


def _extra_shard(work: Path) -> None:
    split = work / "out/shard/hcstvg_v1/train"
    shutil.copy(split / "shard-000000.tar", split / "shard-000009.tar")


def _rejects_deleted(work: Path) -> None:
    (work / "out/shard/hcstvg_v1/test/rejects.parquet").unlink()


def manifest_deleted(ctx: Context, work: Path) -> str:
    params = ctx.copy_base(work, "normalize", "shard", "extract")
    before = files_of(work / "out/extract/hcstvg_v1/test")
    (work / "out/shard/hcstvg_v1/test/manifest.json").unlink()
    said = stops(stage("extract", work, params), "out/shard/hcstvg_v1/test/manifest.json: missing")
    if files_of(work / "out/extract/hcstvg_v1/test") != before:
        raise Unclear("the split's features were changed or deleted")
    return said


def motion_payload_flipped(ctx: Context, work: Path) -> str:
    params = ctx.copy_base(work, "normalize", "shard", "extract")
    tar = work / "out/extract/hcstvg_v1/train/shard-000000.tar"
    original = tar.read_bytes()
    _flip_motion_payload(tar)
    said = stops(stage("train", work, params), f"train: out/extract/hcstvg_v1/train/{tar.name}: sha256")
    quiet(run_stage_module, "extract", work, params)
    if tar.read_bytes() != original:
        raise Unclear("extract did not rebuild the damaged shard to its clean bytes")
    return said + "; extract rebuilt it"


def min_shards_changed(ctx: Context, work: Path) -> str:
    ctx.copy_base(work, "synthesize", "normalize", "shard")  # shards cut with min_shards 2
    changed = with_params(work, lambda p: p["shard"]["shards"].update(min_shards=3))
    quiet(run_stage_module, "shard", work, changed)
    clean = work / "clean"
    clean.mkdir()
    shutil.copy(changed, clean / "params.yaml")
    for name in ("synthesize", "normalize"):
        shutil.copytree(work / "out" / name, clean / "out" / name)
    quiet(run_stage_module, "shard", clean, clean / "params.yaml")
    return identical(work / "out/shard", clean / "out/shard")


def model_flipped(ctx: Context, work: Path) -> str:
    params = ctx.copy_base(work, "normalize", "shard", "extract", "train")
    model = work / "out/train/model.pt"
    _flip_tensor_bit(model)
    return stops(stage("evaluate", work, params), "evaluate: out/train/model.pt", "damaged")


def _evaluate_with_broken(count: str) -> Callable[[Context, Path], str]:
    def probe(ctx: Context, work: Path) -> str:
        import pipeline

        base = ctx.base()
        raw = work / "raw"
        shutil.copytree(base / "out/synthesize", raw)
        test = pq.read_table(base / "out/normalize/hcstvg_v1/test.parquet").to_pylist()
        for row in test[:1] if count == "one" else test:
            (raw / row["video_path"]).write_bytes(b"not an mp4")

        def run():
            return _shard_extract_evaluate(base / "out", base / "params.yaml", raw, work / "run")

        if count == "all":
            return stops(lambda: pipeline.run_stage("evaluate", run), "test.parquet: all 4 samples")
        metrics = quiet(run)
        headline = json.loads((work / "run/evaluate/metrics.json").read_text())
        if headline.get("rejected") != 1 or headline["model"]["n"] != len(test) - 1:
            raise Silent(f"metrics.json: {headline}")
        if metrics["rejects"]["sample_ids"] != [test[0]["sample_id"]]:
            raise Unclear(f"rejects entry: {metrics['rejects']}")
        return f"scored {headline['model']['n']}, rejected 1"

    return probe


def pickle_training_checkpoint(ctx: Context, work: Path) -> str:
    params = ctx.copy_base(work, "shard", "extract", "train")
    marker = work / "executed"
    path = work / "out/train/checkpoints/step_00000099.pt"
    torch.save({"step": 99, "fingerprint": "x", "payload": _Payload(marker)}, path)
    (path.parent / (path.name + ".sha256")).write_text(f"{sha256_file(path)}  {path.name}\n")  # a forged sidecar
    (work / "out/train/model.pt").unlink()
    result = quiet(run_stage_module, "train", work, params)
    if marker.exists():
        raise Silent("the checkpoint's pickle ran code")
    if result["resumed_from"] != 12:
        raise Unclear(f"resumed from {result['resumed_from']}")
    return "not loaded (weights_only); resumed from the newest valid checkpoint"


def pickle_model(ctx: Context, work: Path) -> str:
    marker = work / "executed"
    path = work / "model.pt"
    torch.save({"model": {}, "payload": _Payload(marker)}, path)
    said = ground_fails(ctx, path, ckpt=path)
    if marker.exists():
        raise Silent("the checkpoint's pickle ran code")
    return said


def _kill_rerun(stage_name: str, inputs: tuple[str, ...], started: Callable[[Path], bool]):
    def probe(ctx: Context, work: Path) -> str:
        params = ctx.copy_base(work, *inputs)
        kill_during(module_command(stage_name, params), work, lambda: started(work / "out" / stage_name))
        run_command(module_command(stage_name, params), work)
        return identical(ctx.base() / "out" / stage_name, work / "out" / stage_name)

    return probe


def _any_tar(out: Path) -> bool:
    return any(out.rglob("shard-*.tar"))


def kill_train(ctx: Context, work: Path) -> str:
    params = ctx.copy_base(work, "shard", "extract")
    checkpoints = work / "out/train/checkpoints"
    kill_during(module_command("train", params), work,
                lambda: any(step >= 4 for step, _ in list_checkpoints(checkpoints)))  # fmt: skip
    saved = max(step for step, _ in list_checkpoints(checkpoints))
    if saved >= 12:
        raise Unclear("killed after the last checkpoint")
    run_command(module_command("train", params), work)
    differ = differing_training_files(ctx.base() / "out/train", work / "out/train")
    if differ:
        raise Silent(f"differ from the uninterrupted run: {differ}")
    return f"killed after step {saved}; every checkpoint and model.pt byte-identical"


def checkpoint_disk_full(ctx: Context, work: Path) -> str:
    from cgstvg.engine.checkpoint import save_checkpoint

    save_checkpoint(work, {"step": 1, "w": torch.zeros(8)})
    before = sorted(p.name for p in work.iterdir())
    code = LIMITED + (
        "from cgstvg.engine.checkpoint import save_checkpoint\n"
        f"run_stage('train', lambda: save_checkpoint({str(work)!r}, {{'step': 2, 'w': torch.zeros(1 << 20)}}))\n"
    )
    said = process_fails([sys.executable, "-c", code], f"train: {work}/step_00000002.pt: cannot be written")
    if sorted(p.name for p in work.iterdir()) != before:
        raise Unclear("a partial file was left, or the older checkpoint removed")
    return said


def _ground_file_limit(limit: int, *names) -> Callable[[Context, Path], str]:
    """`cgstvg ground --out` in a process whose files may not grow past `limit` bytes (as a full disk looks)."""

    def probe(ctx: Context, work: Path) -> str:
        from ground_support import make_video

        clip = make_video(work.parent / f"{work.name}.mp4", frames=96)  # 12 s: a 14 KB tube JSON
        out = work / "tube.json"
        code = (
            "import resource, signal, sys\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
            "from cgstvg.cli import main\n"
            f"sys.exit(main(['ground', '--video', {str(clip)!r}, '--text', 'the blue square moves left',"
            f" '--checkpoint', {str(ctx.ground()['ckpt'])!r}, '--device', 'cpu', '--out', {str(out)!r}]))\n"
        )
        said = process_fails(
            [sys.executable, "-c", code], *(n.format(out=out, ckpt=ctx.ground()["ckpt"]) for n in names)
        )
        if list(work.iterdir()):
            raise Unclear(f"left {[p.name for p in work.iterdir()]}")
        return said

    return probe


def ground_out_directory(ctx: Context, work: Path) -> str:
    (work / "taken").mkdir()
    return ground_fails(ctx, f"{work / 'taken'}: cannot be written: it is a directory",
                        extra=("--out", str(work / "taken")))  # fmt: skip


def ground_vfr(ctx: Context, work: Path) -> str:
    from cgstvg.inference.checkpoint import load_grounding_model
    from cgstvg.inference.ground import ground

    pts_ms = [0, 100, 200, 300, 700, 800, 900, 1000] + [1500 + 100 * i for i in range(16)]
    vfr = _vfr_video(work / "vfr.mp4", pts_ms)
    tube = ground(load_grounding_model(ctx.ground()["ckpt"]), vfr, "the blue square moves left").to_json()
    wrong = [b["frame"] for b in tube["boxes"] if abs(b["time_s"] - pts_ms[b["frame"]] / 1000) > 1e-3]
    if wrong:
        raise Silent(f"frames {wrong[:5]} reported at other times than their pts")
    return f"{len(tube['boxes'])} box times equal the frames' pts"


def ground_bad_video(kind: str) -> Callable[[Context, Path], str]:
    def probe(ctx: Context, work: Path) -> str:
        path = work / f"{kind}.mp4"
        if kind == "empty":
            path.write_bytes(b"")
        elif kind == "truncated":
            _truncated(path)
        expected = {"missing": "video not found", "empty": "the file is empty", "truncated": "cannot decode"}[kind]
        return ground_fails(ctx, path, expected, video=path)

    return probe


def ground_junk_checkpoint(ctx: Context, work: Path) -> str:
    path = work / "junk.pt"
    path.write_bytes(b"\x00junk" * 99)
    return ground_fails(ctx, path, "cannot read the checkpoint", ckpt=path)


def ground_missing_tokenizer(ctx: Context, work: Path) -> str:
    """`cgstvg ground --tokenizer DIR` with a folder that is not there."""
    missing = work / "tokenizer"
    return ground_fails(ctx, f"{missing}: tokenizer folder not found", extra=("--tokenizer", str(missing)))


# ---------------------------------------------------------------------------------------------------- registry


def _k(name, group, expect, probe, fast=True):
    return Kind(name, group, expect, probe, fast)


BIG = 3_000_000_000
KINDS: list[Kind] = [
    # --- silent data loss or substitution (the audit)
    _k("checkpoint-bit-flip", "silent", "not resumed from, warning naming it", checkpoint_bit_flip),
    _k("manifest-shard-dropped", "silent", "train stops naming the manifest",
       _damaged_split(_drop_shard, "train", "out/shard/hcstvg_v1/train/manifest.json: does not list")),
    _k("manifest-sample-count-edited", "silent", "train stops naming the shard",
       _damaged_split(_one_sample_less, "train", "out/shard/hcstvg_v1/train/shard-000000.tar: 6 samples")),
    _k("shard-sample-removed", "silent", "evaluate stops: a row of the table is not in the shards",
       _damaged_split(_remove_sample, "evaluate", "out/shard/hcstvg_v1/test/manifest.json: 1 of the 4 rows")),
    _k("manifest-deleted", "silent", "extract stops naming it, the split's features kept", manifest_deleted),
    _k("motion-payload-flipped", "silent", "train stops naming the tar; extract rebuilds it", motion_payload_flipped),
    _k("shard-resume-min-shards-changed", "silent", "the split rewritten as a clean run", min_shards_changed),
    _k("size-mismatch-portrait", "silent", "reject size_mismatch",
       _shard_reject({"videos/portrait.mp4": video(width=96, height=128)},
                     sample_row("portrait", "videos/portrait.mp4", width=128, height=96), "size_mismatch",
                     "portrait.mp4", "96x128", "128x96")),
    _k("hcstvg-v2-img-size-swapped", "silent", "reject size_mismatch", v2_img_size_swapped),
    _k("vidor-duplicate-box", "silent", "reject duplicate_box naming file and frame", duplicate_box),
    _k("ground-variable-frame-rate", "silent", "times from the frames' pts", ground_vfr),
    _k("params-key-typo", "silent", "refused naming the key",
       _params_kind(lambda p: p["train"].update(batchsize=64), "unknown key 'batchsize'")),
    _k("params-section-typo", "silent", "refused naming the section",
       _params_kind(lambda p: p.update(trian={"epochs": 1}), "unknown section 'trian'")),
    # --- crashes (the audit)
    _k("img_num-3e9", "crash", "one line naming file and record",
       _malformed_hc(json.dumps({"a.mp4": hc_v1(img_num=BIG)}), "record 'a.mp4': key 'img_num'", "int32")),
    _k("width-3e9", "crash", "one line naming file and record",
       _malformed_hc(json.dumps({"a.mp4": hc_v1(width=3e9)}), "record 'a.mp4': key 'width'", "int32")),
    _k("frame_count-3e9", "crash", "one line naming file and entry",
       _malformed_vid(lambda e, b: e[1].update(frame_count=BIG), False, "entry 1: key 'frame_count'")),
    _k("json-200k-deep", "crash", "one line naming the file",
       _malformed_hc("[" * 200_000 + "]" * 200_000, "nested too deeply")),
    _k("annotation-is-directory", "crash", "one line naming it", _unreadable_annotation("directory")),
    _k("annotation-symlink-loop", "crash", "one line naming it", _unreadable_annotation("symlink")),
    _k("one-test-video-rejected", "crash", "evaluate scores the rest and reports rejected",
       _evaluate_with_broken("one")),
    _k("all-test-videos-rejected", "crash", "one line naming the table", _evaluate_with_broken("all"), fast=False),
    # --- unclear (the audit)
    _k("non-ascii-keys", "unclear", "distinct ids", non_ascii_ids),
    _k("vidstg-duplicate-entry", "unclear", "reject duplicate_entry", duplicate_entry),
    _k("frame-shard-corrupt-jpeg", "unclear", "stops naming the shard (its sha256)",
       _damaged_split(_corrupt_jpeg(False), "extract", "out/shard/hcstvg_v1/test/shard-000000.tar: sha256")),
    _k("frame-shard-corrupt-jpeg-rehashed", "unclear", "stops naming the shard and the sample",
       _damaged_split(_corrupt_jpeg(True), "extract", "out/shard/hcstvg_v1/test/shard-000000.tar: sample")),
    _k("frame-shard-tar-header-flipped", "unclear", "stops naming the shard (its sha256)",
       _damaged_split(_flip_tar_header(False), "extract", "out/shard/hcstvg_v1/test/shard-000000.tar: sha256")),
    _k("frame-shard-tar-header-rehashed", "unclear", "stops naming the shard",
       _damaged_split(_flip_tar_header(True), "extract", "out/shard/hcstvg_v1/test/shard-000000.tar")),
    _k("checkpoint-disk-full", "unclear", "one line naming the checkpoint, older ones kept", checkpoint_disk_full),
    # 10 kB: the stored tokenizer (8 kB) unpacks, the 14 kB tube JSON does not fit
    _k("ground-out-disk-full", "unclear", "one line naming --out",
       _ground_file_limit(10_000, "{out}: cannot be written", "free there"), fast=False),
    _k("ground-out-directory", "unclear", "one line naming --out", ground_out_directory),
    _k("params-batch-size-word", "unclear", "refused naming the key",
       _params_kind(lambda p: p["train"].update(batch_size="eight"), "train.batch_size", "'eight'")),
    _k("params-batch-size-zero", "unclear", "refused naming the key",
       _params_kind(lambda p: p["train"].update(batch_size=0), "train.batch_size", "got 0")),
    _k("params-batch-size-negative", "unclear", "refused naming the key",
       _params_kind(lambda p: p["train"].update(batch_size=-2), "train.batch_size", "got -2")),
    _k("params-threads-zero", "unclear", "refused naming the key",
       _params_kind(lambda p: p["train"].update(threads=0), "train.threads", "got 0")),
    # --- found well handled by the audit
    _k("path-escape-hcstvg", "handled", "reject path_escapes_root", path_escape),
    _k("path-escape-vidstg", "handled", "reject path_escapes_root", path_escape_vidstg),
    _k("tar-member-dotdot", "handled", "stops naming the shard; nothing written outside",
       _damaged_split(_dotdot_member, "extract", "out/shard/hcstvg_v1/test/shard-000000.tar")),
    _k("pickle-payload-training-checkpoint", "handled", "not loaded, no code run", pickle_training_checkpoint),
    _k("pickle-payload-model", "handled", "one line naming it, no code run", pickle_model),
    _k("kill9-shard-rerun", "handled", "rerun byte-identical",
       _kill_rerun("shard", ("synthesize", "normalize"), _any_tar), fast=False),
    _k("kill9-extract-rerun", "handled", "rerun byte-identical",
       _kill_rerun("extract", ("normalize", "shard"), _any_tar), fast=False),
    _k("kill9-evaluate-rerun", "handled", "rerun byte-identical",
       _kill_rerun("evaluate", ("normalize", "shard", "extract", "train"), lambda out: out.is_dir()), fast=False),
    _k("kill9-train-resume", "handled", "later checkpoints and model.pt byte-identical", kill_train, fast=False),
    _k("train-resume-bytes", "handled", "checkpoints and model.pt byte-identical", train_resume_bytes),
    _k("annotation-missing-key", "handled", "one line naming file and record",
       _malformed_hc(json.dumps({"a.mp4": {k: v for k, v in hc_v1().items() if k != "bbox"}}), "record 'a.mp4'")),
    _k("annotation-wrong-type", "handled", "one line naming file and record",
       _malformed_hc(json.dumps({"a.mp4": hc_v1(st_frame="3")}), "record 'a.mp4'")),
    _k("annotation-invalid-json", "handled", "one line naming file and position",
       _malformed_hc('{"a.mp4": {"bbox": [}', "line 1 column 21")),
    _k("annotation-top-level-list", "handled", "one line naming the file", _malformed_hc("[1, 2]", "top level")),
    _k("vidstg-no-temporal-gt", "handled", "one line naming file and entry",
       _malformed_vid(lambda e, b: e[1].pop("temporal_gt"), False, "entry 1")),
    _k("vidor-string-coordinate", "handled", "one line naming the box file and box",
       _malformed_vid(lambda e, b: b["trajectories"][3][1]["bbox"].update(xmax="12"), True, "trajectories[3][1]")),
    _k("box-out-of-frame", "handled", "reject bad_box",
       _hc_reject({"a.mp4": hc_v1(bbox=[[1, 1, 5, 5], [70, 10, 5, 5]]), "b.mp4": hc_v1()}, "a", "bad_box", "frame 11")),
    _k("end-before-start", "handled", "reject start_after_end",
       _hc_reject({"a.mp4": hc_v1(bbox=[]), "b.mp4": hc_v1()}, "a", "start_after_end")),
    _k("empty-sentence", "handled", "reject empty_sentence",
       _hc_reject({"a.mp4": hc_v1(caption="  "), "b.mp4": hc_v1()}, "a", "empty_sentence")),
    _k("tube-outside-video", "handled", "reject tube_outside_video",
       _hc_reject({"late.mp4": hc_v1(st_frame=99), "b.mp4": hc_v1()}, "late", "tube_outside_video")),
    # --- added since
    _k("missing-video-annotated", "extra", "reject missing_video",
       _hc_reject({"a.mp4": hc_v1(), "b.mp4": hc_v1()}, "b", "missing_video", "videos/b.mp4", videos=["a.mp4"])),
    _k("vidstg-missing-video", "extra", "reject missing_video", vidstg_missing_video),
    _k("vidstg-trajectory-hole", "extra", "reject trajectory_hole", vidstg_trajectory_hole),
    _k("zero-byte-video", "extra", "reject empty_video",
       _shard_reject({"videos/empty.mp4": lambda p: p.write_bytes(b"")}, sample_row("empty", "videos/empty.mp4"),
                     "empty_video", "empty.mp4")),
    _k("truncated-mp4", "extra", "reject undecodable_video",
       _shard_reject({"videos/cut.mp4": _truncated}, sample_row("cut", "videos/cut.mp4"), "undecodable_video",
                     "cut.mp4")),
    _k("video-gone-before-shard", "extra", "reject missing_video",
       _shard_reject({}, sample_row("gone", "videos/gone.mp4"), "missing_video", "gone.mp4")),
    _k("frame-count-mismatch", "extra", "reject frame_count_mismatch",
       _shard_reject({"videos/long.mp4": video(40)}, sample_row("long", "videos/long.mp4"), "frame_count_mismatch",
                     "long.mp4: 40 decodable frames")),
    _k("frame-shard-byte-flip", "extra", "train stops naming the shard",
       _damaged_split(_flip_frame_shard, "train", "out/shard/hcstvg_v1/train/shard-000001.tar: sha256")),
    _k("unlisted-shard", "extra", "train stops naming the manifest",
       _damaged_split(_extra_shard, "train", "manifest.json: does not list shard-000009.tar")),
    _k("rejects-table-deleted", "extra", "evaluate stops naming it",
       _damaged_split(_rejects_deleted, "evaluate", "out/shard/hcstvg_v1/test/rejects.parquet: missing")),
    _k("model-weight-flipped", "extra", "evaluate stops naming model.pt", model_flipped),
    _k("ground-missing-video", "extra", "one line naming it", ground_bad_video("missing")),
    _k("ground-zero-byte-video", "extra", "one line naming it", ground_bad_video("empty")),
    _k("ground-truncated-video", "extra", "one line naming it", ground_bad_video("truncated")),
    _k("ground-temp-disk-full", "extra", "one line naming the checkpoint",
       _ground_file_limit(256, "{ckpt}: cannot unpack its tokenizer", "disk full"), fast=False),
    _k("ground-junk-checkpoint", "extra", "one line naming it", ground_junk_checkpoint),
    _k("missing-tokenizer-dir", "extra", "an error naming the folder", ground_missing_tokenizer),
    _k("params-device-typo", "extra", "refused naming the key",
       _params_kind(lambda p: p["train"].update(device="gpu"), "train.device", "'gpu'")),
    _k("params-evaluate-threads-zero", "extra", "refused naming the key",
       _params_kind(lambda p: p["evaluate"].update(threads=0), "evaluate.threads")),
    _k("params-jpeg-quality-101", "extra", "refused naming the key",
       _params_kind(lambda p: p["shard"].update(jpeg_quality=101), "shard.jpeg_quality")),
    _k("params-float-epochs", "extra", "refused naming the key",
       _params_kind(lambda p: p["train"].update(epochs=3.0), "train.epochs")),
    _k("params-nested-typo", "extra", "refused naming the key",
       _params_kind(lambda p: p["shard"]["resize"].update(short_sid=420), "shard.resize: unknown key 'short_sid'")),
    _k("params-zero-depth", "extra", "refused naming the list item",
       _params_kind(lambda p: p["model"]["backbones"]["motion"].update(depths=[1, 0]),
                    "model.backbones.motion.depths[1]")),
]  # fmt: skip

assert len({k.name for k in KINDS}) == len(KINDS), "kind names must be unique"
