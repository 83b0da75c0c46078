"""Benchmark the data feed: (a) our shard loader vs (b) the release's loader, on the same clips and samples.

    python bench/data_feed.py [--clips both|hcstvg|vidstg --per-dataset 2 --vidstg-seconds 36 --passes 2
                               --threads 1 --crf 23]

Clips (made with PyAV in a temporary folder, see `bench/_clips.py`): HC-STVG-like (20 s, 640x360, 25 and 30 fps)
and VidSTG-like (36 s, 640x360 and 640x480, 30 fps); the default mixes both datasets, two clips each. Every
sample is delivered by both sides as the same tensor: the release's training frames (HC-STVG: 3.2 fps rule, 65
frames; VidSTG: linspace to 64 frames of the used segment) at the release's size (height 420, width
min(int(420 w / h), 588)), (T, 3, 420, W) float32, ImageNet-normalized.
(a) reads the WebDataset shards written once beforehand by `cgstvg.data.shard_writer` (JPEG frames, already
    sampled and resized) with `ShardLoader`, in-process (no DataLoader workers). Writing the shards is a one-off
    cost, reported separately (`shard_build_s`).
(b) does what the release does for every sample, every epoch (see `bench/_release_feed.py`): an ffmpeg
    subprocess pipes the whole video at full resolution as rawvideo rgb24, all of it is read into memory and
    reshaped with numpy, the sampled frames are indexed, converted, resized (antialias) and normalized.
Each side runs in its own subprocess with the same torch thread count; ffmpeg keeps its default decoder threads,
as in the release. Peak RSS is the process's own high-water mark, VmHWM in /proc/self/status (Linux): ru_maxrss
is not usable here, since a child started by vfork/exec inherits its parent's peak. ffmpeg's own peak is measured
apart, once per video, from a bare launcher. Writing the first pass's outputs for the equality check is excluded
from the timings. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

SAMPLING = {"hcstvg_fps": 3.2, "vidstg_frames": 64, "fixed_frames": 64, "eval_multiplier": 2}
POLICY = {"hcstvg_v1": "hcstvg", "vidstg": "vidstg"}
# Both decoders give bit-identical RGB frames (decord and ffmpeg, checked); what is left is JPEG q90 (about 32 dB
# on these noisy clips, ~4 levels mean) and uint8-vs-float resize rounding. Below 30 dB the frames would differ.
MIN_PSNR_DB = 30.0
B_METHOD = (
    "per sample, every epoch: ffmpeg subprocess (-f rawvideo -pix_fmt rgb24 pipe:, read with "
    "Popen.communicate as ffmpeg-python does) decodes the whole video at full resolution into memory, "
    "np.frombuffer().reshape(-1, h, w, 3), index the sampled frames, per-frame ToTensor + "
    "Resize(antialias=True), torch.stack, F.normalize"
)


def _shard_config(**extra):
    from cgstvg.data.shard_writer import ShardConfig

    return ShardConfig(
        policy=POLICY, sampling=SAMPLING, short_side=420, max_long_side=0, resize_mode="release", width_cap=1.4, **extra
    )


def prepare(work: Path, specs: list, crf: int) -> dict:
    """Clips, shards (one split per dataset) and the plan (b) reads; returns timings and clip facts."""
    from _clips import sample_row, write_clip
    from cgstvg.data.schema import sample_table
    from cgstvg.data.shard_writer import plan_split, write_split

    t0 = time.perf_counter()
    rows, clips = [], []
    for i, spec in enumerate(specs):
        name = f"v{i}.mp4"
        kbps = write_clip(work / name, spec, seed=i, crf=crf)
        rows.append(sample_row(spec, i, name))
        clips.append(
            {
                "dataset": spec.dataset,
                "seconds": spec.seconds,
                "fps": spec.fps,
                "size": [spec.height, spec.width],
                "frames": spec.frames,
                "kbps": round(kbps),
            }
        )
    t1 = time.perf_counter()
    plan = []
    for dataset in sorted({r["dataset"] for r in rows}):
        table = sample_table([r for r in rows if r["dataset"] == dataset])
        write_split(
            table,
            work,
            work / "shards" / dataset,
            _shard_config(jpeg_quality=90, max_samples=1, min_shards=1, workers=2),
            progress=False,
        )
        plan += plan_split(table, _shard_config())
    shard_build_s = time.perf_counter() - t1
    (work / "plan.json").write_text(json.dumps(plan))
    by_id = {r["sample_id"]: r for r in plan}
    for clip, row in zip(clips, rows):
        clip["sampled_frames"] = len(by_id[row["sample_id"]]["frame_ids"])
        clip["out_size"] = by_id[row["sample_id"]]["size"]
    mb = lambda paths: sum(p.stat().st_size for p in paths) / 2**20  # noqa: E731
    return {
        "make_videos_s": t1 - t0,
        "shard_build_s": shard_build_s,
        "clips": clips,
        "videos_mb": mb(work.glob("v*.mp4")),
        "shards_mb": mb((work / "shards").rglob("*.tar")),
    }


# Runs ffmpeg as (b) does, with its output discarded, from a process that imports nothing big: the child's
# ru_maxrss then holds ffmpeg's own peak plus at most this launcher's few MB (inherited through vfork/exec).
_FFMPEG_PEAK = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, "
    "stderr=subprocess.DEVNULL, check=True); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)"
)


def ffmpeg_peak_rss_mb(exe: str, video: Path) -> float:
    cmd = [exe, "-i", str(video), "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:"]
    return float(
        subprocess.run([sys.executable, "-c", _FFMPEG_PEAK, *cmd], check=True, capture_output=True, text=True).stdout
    )


def _rss_high_water_mb() -> float:
    """This process's peak resident set size since exec (VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("/proc/self/status has no VmHWM line (this benchmark measures memory on Linux only)")


def _cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


class _Clock:
    """Wall and CPU time of this process and its children, less the spans spent in `excluded()`."""

    def __init__(self):
        self.wall = self.cpu = 0.0
        self._t, self._c = time.perf_counter(), self._cpu()
        self.last = self._t

    @staticmethod
    def _cpu() -> float:
        return _cpu_seconds(resource.RUSAGE_SELF) + _cpu_seconds(resource.RUSAGE_CHILDREN)

    def lap(self) -> float:
        """Wall seconds since the previous lap (or the end of the last excluded span)."""
        now = time.perf_counter()
        dt, self.last = now - self.last, now
        return dt

    def excluded(self, fn) -> None:
        t, c = time.perf_counter(), self._cpu()
        fn()
        self.wall -= time.perf_counter() - t
        self.cpu -= self._cpu() - c
        self.last = time.perf_counter()

    def stop(self) -> None:
        self.wall += time.perf_counter() - self._t
        self.cpu += self._cpu() - self._c


def side_a(work: Path, passes: int, clock: _Clock) -> dict[str, list[float]]:
    import torch

    from cgstvg.data.shard_reader import ShardLoader

    loaders = [ShardLoader(d, batch_size=1, train=False) for d in sorted((work / "shards").iterdir())]
    times: dict[str, list[float]] = {}
    for p in range(passes):
        for loader in loaders:
            for batch in loader:
                sid = batch["targets"][0]["sample_id"]
                times.setdefault(sid, []).append(clock.lap())
                if p == 0:
                    # excluded() calls the lambda at once, so it sees this iteration's batch and sid
                    clock.excluded(lambda: torch.save(batch["frames"][0], work / f"a_{sid}.pt"))  # noqa: B023, F821
                del batch  # as (b) does: measure the feed, not two batches held by the loop variable
    return times


def side_b(work: Path, passes: int, clock: _Clock) -> dict[str, list[float]]:
    import torch

    from _release_feed import ffmpeg_exe, release_sample

    exe = ffmpeg_exe()
    plan = json.loads((work / "plan.json").read_text())
    times: dict[str, list[float]] = {}
    for p in range(passes):
        for rec in plan:
            out = release_sample(
                exe, str(work / rec["video_path"]), rec["frame_ids"], tuple(rec["orig_size"]), tuple(rec["size"])
            )
            times.setdefault(rec["sample_id"], []).append(clock.lap())
            if p == 0:
                clock.excluded(lambda: torch.save(out, work / f"b_{rec['sample_id']}.pt"))  # noqa: B023, F821
            del out
    return times


def run_side(side: str, work: Path, passes: int, threads: int) -> None:
    # both sides import the same libraries before the baseline RSS is taken
    import numpy  # noqa: F401
    import torch
    import torchvision.transforms  # noqa: F401
    import webdataset  # noqa: F401

    import _release_feed  # noqa: F401
    import cgstvg.data.shard_reader  # noqa: F401

    torch.set_num_threads(threads)
    import_mb = _rss_high_water_mb()
    clock = _Clock()
    times = (side_a if side == "a" else side_b)(work, passes, clock)
    clock.stop()
    n = sum(len(t) for t in times.values())
    print(
        json.dumps(
            {
                "samples": n,
                "seconds": clock.wall,
                "samples_per_s": n / clock.wall,
                "cpu_s_per_sample": clock.cpu / n,
                "peak_rss_mb": _rss_high_water_mb(),
                "import_rss_mb": import_mb,
                "sample_s": times,
            }
        )
    )


def compare_outputs(work: Path, plan: list[dict]) -> dict:
    """Check that (a) and (b) delivered the same frames: equal shapes, and PSNR at JPEG precision (pixel levels)."""
    import torch

    from _release_feed import IMAGENET_STD

    to_levels = torch.tensor(IMAGENET_STD).view(3, 1, 1) * 255  # normalized difference -> 0..255 levels
    psnr, mad = {}, {}
    for rec in plan:
        sid = rec["sample_id"]
        a, b = (torch.load(work / f"{s}_{sid}.pt", weights_only=True) for s in "ab")
        expected = (len(rec["frame_ids"]), 3, *rec["size"])
        if tuple(a.shape) != expected or tuple(b.shape) != expected:
            raise SystemExit(
                f"sample {sid}: output shapes {tuple(a.shape)} (a), {tuple(b.shape)} (b), expected {expected}"
            )
        diff = (a - b).mul_(to_levels)
        mad[sid] = float(diff.abs().mean())
        psnr[sid] = 10 * math.log10(255**2 / float(diff.square().mean()))
        if psnr[sid] < MIN_PSNR_DB:
            raise SystemExit(f"sample {sid}: (a) and (b) differ beyond JPEG precision: PSNR {psnr[sid]:.1f} dB")
    return {"output_psnr_db_min": min(psnr.values()), "output_mean_abs_diff_levels_max": max(mad.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", choices=("both", "hcstvg", "vidstg"), default="both")
    parser.add_argument("--per-dataset", type=int, default=2, help="clips per dataset (one sample each)")
    parser.add_argument("--vidstg-seconds", type=int, default=36)
    parser.add_argument("--passes", type=int, default=2, help="epochs over the samples, per side")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, both sides (a DataLoader worker: 1)")
    parser.add_argument("--crf", type=int, default=23, help="x264 CRF of the generated clips")
    parser.add_argument("--side", choices=("a", "b"), help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        run_side(args.side, args.work, args.passes, args.threads)
        return

    from _clips import default_specs
    from _release_feed import ffmpeg_exe

    exe = ffmpeg_exe()
    ffmpeg_version = subprocess.run([exe, "-version"], capture_output=True, text=True).stdout.split("\n")[0]
    with tempfile.TemporaryDirectory(prefix="data-feed-") as tmp:
        work = Path(tmp)
        result = prepare(work, default_specs(args.clips, args.per_dataset, args.vidstg_seconds), args.crf)
        sides = {}
        for side in ("a", "b"):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--side",
                    side,
                    "--work",
                    str(work),
                    "--passes",
                    str(args.passes),
                    "--threads",
                    str(args.threads),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            sides[side] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"({side}) " + json.dumps({k: v for k, v in sides[side].items() if k != "sample_s"}), file=sys.stderr)
        plan = json.loads((work / "plan.json").read_text())
        check = compare_outputs(work, plan)
        ffmpeg_mb = max(ffmpeg_peak_rss_mb(exe, work / name) for name in sorted({r["video_path"] for r in plan}))
    a, b = sides["a"], sides["b"]
    per_dataset = {}
    for dataset in sorted({r["dataset"] for r in plan}):
        ids = [r["sample_id"] for r in plan if r["dataset"] == dataset]
        d = {
            f"{s}_s_per_sample": sum(sum(sides[s]["sample_s"][i]) for i in ids)
            / sum(len(sides[s]["sample_s"][i]) for i in ids)
            for s in "ab"
        }
        per_dataset[dataset] = {**d, "speedup": d["b_s_per_sample"] / d["a_s_per_sample"]}
    saved_per_epoch_s = len(plan) * (1 / b["samples_per_s"] - 1 / a["samples_per_s"])
    result.update(
        speedup=a["samples_per_s"] / b["samples_per_s"],
        peak_rss_ratio=a["peak_rss_mb"] / b["peak_rss_mb"],
        # CPU seconds per sample (ffmpeg's included): steadier than wall time on a shared machine
        cpu_speedup=b["cpu_s_per_sample"] / a["cpu_s_per_sample"],
        a_samples_per_s=a["samples_per_s"],
        b_samples_per_s=b["samples_per_s"],
        a_cpu_s_per_sample=a["cpu_s_per_sample"],
        b_cpu_s_per_sample=b["cpu_s_per_sample"],
        a_peak_rss_mb=a["peak_rss_mb"],
        b_peak_rss_mb=b["peak_rss_mb"],
        # not added to b's peak: (b)'s Python peak (joining the piped chunks) comes after ffmpeg has exited
        b_ffmpeg_peak_rss_mb=ffmpeg_mb,
        import_rss_mb=b["import_rss_mb"],
        # the same comparison without the libraries' resident memory (torch etc., equal on both sides)
        peak_rss_above_imports_ratio=(a["peak_rss_mb"] - a["import_rss_mb"]) / (b["peak_rss_mb"] - b["import_rss_mb"]),
        # epochs after which writing the shards once has paid for itself (on this clip set, in wall time)
        shard_break_even_epochs=result["shard_build_s"] / saved_per_epoch_s if saved_per_epoch_s > 0 else None,
        per_dataset=per_dataset,
        samples_per_side=a["samples"],
        passes=args.passes,
        torch_threads=args.threads,
        **check,
        b_method=B_METHOD,
        ffmpeg=ffmpeg_version,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
