"""Benchmark the data feed: (a) our shard loader vs (b) the release's approach, on the same clips.

    python bench/data_feed.py [--videos 3 --seconds 20 --fps 30 --passes 2]

Both sides deliver the same output for every sample: the release's HC-STVG training frames (3.2 fps rule, 65
frames of a 20 s clip) at the release's size (height 420, width min(int(420 w / h), 588)), as a (T, 3, 420, 588)
float32 ImageNet-normalized tensor.
(a) reads the WebDataset shards written by `cgstvg.data.shard_writer` (JPEG frames, already sampled and resized)
    with `ShardLoader`, one process, no DataLoader workers.
(b) does what the release does per sample: decode the whole video at native resolution into one RGB array (the
    release pipes ffmpeg's rawvideo output into numpy; here PyAV, frame-threaded like the ffmpeg binary), index
    the sampled frames, resize them (same torchvision antialiased bilinear) and normalize.
Each side runs in its own subprocess, so its peak RSS (ru_maxrss) is its own. Shard writing is a one-off cost,
reported separately (`shard_build_s`). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WIDTH, HEIGHT = 640, 360
SAMPLING = {"hcstvg_fps": 3.2, "vidstg_frames": 64, "fixed_frames": 64, "eval_multiplier": 2}


def make_video(path: Path, seconds: int, fps: int, seed: int) -> None:
    """A 640x360 H.264 clip: a smooth scrolling background, a moving block and mild sensor-like noise."""
    import av
    import numpy as np

    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (HEIGHT // 40, WIDTH // 40, 3)).astype(np.float32)
    background = np.kron(coarse, np.ones((40, 40, 1), np.float32))  # blocky, then smoothed below
    for axis in (0, 1):
        background = (background + np.roll(background, 20, axis) + np.roll(background, -20, axis)) / 3
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for i in range(seconds * fps):
            img = np.roll(background, 3 * i, axis=1) + rng.normal(0, 3, (HEIGHT, WIDTH, 1))
            img[60:160, (5 * i) % 500:(5 * i) % 500 + 100] = (230, 40, 40)
            frame = np.clip(img, 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def prepare(work: Path, n_videos: int, seconds: int, fps: int) -> dict:
    """Videos, a normalized table and its shards; returns timings."""
    from cgstvg.data.schema import sample_table
    from cgstvg.data.shard_writer import ShardConfig, write_split

    t0 = time.perf_counter()
    rows = []
    for i in range(n_videos):
        make_video(work / f"v{i}.mp4", seconds, fps, seed=i)
        frames = seconds * fps
        tube = (frames // 4, frames // 2)
        rows.append({"dataset": "hcstvg_v1", "split": "train", "sample_id": f"s{i}", "video_id": f"v{i}",
                     "video_path": f"v{i}.mp4", "sentence": "the man on the left", "qtype": "declar",
                     "width": WIDTH, "height": HEIGHT, "fps": frames / 20, "fps_source": "img_num/20",
                     "frame_count": frames, "segment_start": 0, "segment_end": frames - 1,
                     "tube_start": tube[0], "tube_end": tube[1],
                     "boxes": [[100.0, 60.0, 200.0, 160.0]] * (tube[1] - tube[0] + 1), "target_id": None,
                     "source": f"bench#{i}"})
    table = sample_table(rows)
    import pyarrow.parquet as pq

    pq.write_table(table, work / "table.parquet")
    t1 = time.perf_counter()
    cfg = ShardConfig(policy={"hcstvg_v1": "hcstvg"}, sampling=SAMPLING, short_side=420, max_long_side=0,
                      resize_mode="release", width_cap=1.4, jpeg_quality=90, max_samples=1, min_shards=1, workers=2)
    write_split(table, work, work / "shards", cfg, progress=False)
    return {"make_videos_s": t1 - t0, "shard_build_s": time.perf_counter() - t1}


def side_a(work: Path, passes: int) -> int:
    import torch

    from cgstvg.data.shard_reader import ShardLoader

    loader = ShardLoader(work / "shards", batch_size=1, train=False)
    n = 0
    for _ in range(passes):
        for batch in loader:
            if n == 0:  # saved for the equality check, not kept in memory
                torch.save(batch["frames"][0], work / "first_a.pt")
            n += 1
            del batch  # as (b) does: measure the feed, not two batches held by the loop variable
    return n


def side_b(work: Path, passes: int) -> int:
    import av
    import numpy as np
    import pyarrow.parquet as pq
    import torch

    from cgstvg.data.resize import resize_frames
    from cgstvg.data.collate import normalize_frames
    from cgstvg.data.shard_writer import ShardConfig, plan_split

    cfg = ShardConfig(policy={"hcstvg_v1": "hcstvg"}, sampling=SAMPLING, short_side=420, max_long_side=0,
                      resize_mode="release", width_cap=1.4)
    plan = plan_split(pq.read_table(work / "table.parquet"), cfg)
    n = 0
    for _ in range(passes):
        for rec in plan:
            with av.open(str(work / rec["video_path"])) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"  # as the ffmpeg binary decodes: frame and slice threads
                video = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
            frames = torch.from_numpy(video[rec["frame_ids"]]).permute(0, 3, 1, 2)
            out = normalize_frames(resize_frames(frames, tuple(rec["size"])))
            del video
            if n == 0:
                torch.save(out, work / "first_b.pt")
            n += 1
            del out, frames
    return n


def _cpu_seconds() -> float:
    """User + system CPU time of this process, all its threads (the video decoder's included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_side(side: str, work: Path, passes: int) -> None:
    import av  # noqa: F401  (both sides import the same libraries before the baseline RSS is taken)
    import torch

    import cgstvg.data.shard_reader  # noqa: F401
    import cgstvg.data.shard_writer  # noqa: F401

    # one intra-op thread, as in a DataLoader worker; (b)'s video decoder still runs its own frame threads
    torch.set_num_threads(1)
    import_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    fn = side_a if side == "a" else side_b
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    n = fn(work, passes)
    seconds, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"samples": n, "seconds": seconds, "samples_per_s": n / seconds, "cpu_s_per_sample": cpu / n,
                      "peak_rss_mb": peak_mb,
                      "import_rss_mb": import_mb}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--side", choices=("a", "b"), help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        run_side(args.side, args.work, args.passes)
        return

    import torch

    with tempfile.TemporaryDirectory(prefix="data-feed-") as tmp:
        work = Path(tmp)
        result = prepare(work, args.videos, args.seconds, args.fps)
        sides = {}
        for side in ("a", "b"):
            out = subprocess.run([sys.executable, __file__, "--side", side, "--work", str(work), "--passes",
                                  str(args.passes)], check=True, capture_output=True, text=True)
            sides[side] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"({side}) {sides[side]}", file=sys.stderr)
        a, b = (torch.load(work / f"first_{s}.pt", weights_only=True) for s in "ab")
        if a.shape != b.shape:
            raise SystemExit(f"output tensors differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
        result.update(
            speedup=sides["a"]["samples_per_s"] / sides["b"]["samples_per_s"],
            peak_rss_ratio=sides["a"]["peak_rss_mb"] / sides["b"]["peak_rss_mb"],
            # CPU seconds per sample: steadier than wall time on a shared machine, and charges (b)'s decoder threads
            cpu_speedup=sides["b"]["cpu_s_per_sample"] / sides["a"]["cpu_s_per_sample"],
            a_samples_per_s=sides["a"]["samples_per_s"], b_samples_per_s=sides["b"]["samples_per_s"],
            a_peak_rss_mb=sides["a"]["peak_rss_mb"], b_peak_rss_mb=sides["b"]["peak_rss_mb"],
            # the same comparison without the libraries' resident memory (torch etc., equal on both sides)
            peak_rss_above_imports_ratio=(sides["a"]["peak_rss_mb"] - sides["a"]["import_rss_mb"])
            / (sides["b"]["peak_rss_mb"] - sides["b"]["import_rss_mb"]),
            output_shape=list(a.shape), output_mean_abs_diff=float((a - b).abs().mean()),
            videos=args.videos, seconds=args.seconds, fps=args.fps, size=[HEIGHT, WIDTH],
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
