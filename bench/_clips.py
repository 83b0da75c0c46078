"""Synthetic H.264 clips shaped like HC-STVG and VidSTG videos, with their normalized sample rows (for benchmarks).

The shapes follow the datasets (see shared/reference/stvg-field-and-datasets.md and the VidSTG val annotations):
- HC-STVG: 20 s clips (the release assumes img_num = 20 x fps), 640x360, 25 or 30 fps; the whole clip is the
  segment, sampled by the release's 3.2 fps rule (65 frames for training).
- VidSTG: whole videos of about 36 s (test median frame_count 1090; val per-sample median 34 s), 640x360 or
  640x480, 30 fps; the `used_segment` is the first ~19 s (median 552-586 frames, median start 0), sampled by
  linspace to 64 frames. The release decodes the whole video all the same.
Content: a textured background scrolling sideways, a moving block and fresh sensor-like noise per frame, encoded
with libx264 (preset veryfast, CRF 23), which gives a bitrate near that of web video at this size (the bench
reports the measured bitrate, since decoding cost grows with it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

VIDSTG_SEGMENT_S = 19.0  # median used_segment length (VidSTG test: 552 frames; val: 586 frames, ~30 fps)


@dataclass(frozen=True)
class ClipSpec:
    """One synthetic video: its dataset (a `cgstvg.data.schema.DATASETS` name), duration, frame rate and size."""

    dataset: str
    seconds: int
    fps: int
    width: int
    height: int

    @property
    def frames(self) -> int:
        return self.seconds * self.fps


def default_specs(which: str, per_dataset: int, vidstg_seconds: int = 36) -> list[ClipSpec]:
    """`per_dataset` clips of HC-STVG, VidSTG or both (`which` = hcstvg | vidstg | both), alternating sizes/rates."""
    kinds = {
        "hcstvg": [ClipSpec("hcstvg_v1", 20, 25, 640, 360), ClipSpec("hcstvg_v1", 20, 30, 640, 360)],
        "vidstg": [ClipSpec("vidstg", vidstg_seconds, 30, 640, 360), ClipSpec("vidstg", vidstg_seconds, 30, 640, 480)],
    }
    if which not in (*kinds, "both"):
        raise ValueError(f"unknown clip set {which!r} (choose hcstvg, vidstg or both)")
    names = list(kinds) if which == "both" else [which]
    return [kinds[n][i % len(kinds[n])] for n in names for i in range(per_dataset)]


def write_clip(path: Path, spec: ClipSpec, seed: int, crf: int = 23, noise_sigma: float = 6.0) -> float:
    """Encode one clip to `path` (H.264, yuv420p, MP4); returns its video bitrate in kbit/s."""
    import av
    import numpy as np

    rng = np.random.default_rng(seed)
    h, w, block = spec.height, spec.width, 16
    coarse = rng.integers(0, 256, (h // block + 1, 2 * w // block + 1, 3)).astype(np.float32)
    background = np.kron(coarse, np.ones((block, block, 1), np.float32))[:h, : 2 * w]
    background = (background + np.roll(background, block // 2, 0) + np.roll(background, block // 2, 1)) / 3
    # one noise field, read at a random offset per frame: fresh noise to the encoder, without an RNG call per pixel
    noise = rng.normal(0, noise_sigma, (h + 64, w + 64, 1)).astype(np.float32)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=spec.fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": str(crf)}
        for i in range(spec.frames):
            dy, dx = rng.integers(0, 64, 2)
            x = (3 * i) % w
            img = background[:, x : x + w] + noise[dy : dy + h, dx : dx + w]
            bx = (5 * i) % (w - 100)
            img[60:160, bx : bx + 100] = (230, 40, 40)
            frame = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path.stat().st_size * 8 / spec.seconds / 1000


def sample_row(spec: ClipSpec, index: int, video_path: str) -> dict:
    """The normalized row (`cgstvg.data.schema.SAMPLE_SCHEMA`) of one sentence on this clip, train split."""
    n = spec.frames
    if spec.dataset == "vidstg":
        segment = (0, min(n, round(VIDSTG_SEGMENT_S * spec.fps)) - 1)
        fps, fps_source, target_id = float(spec.fps), "annotation", 0
    else:
        segment = (0, n - 1)
        fps, fps_source, target_id = n / 20, "img_num/20", None
    length = segment[1] - segment[0] + 1
    tube = (segment[0] + length // 3, segment[0] + 2 * length // 3)
    box = [100.0, 60.0, 200.0, 160.0]
    return {
        "dataset": spec.dataset,
        "split": "train",
        "sample_id": f"{spec.dataset}{index}",
        "video_id": f"{spec.dataset}{index}",
        "video_path": video_path,
        "sentence": "the man on the left",
        "qtype": "declar",
        "width": spec.width,
        "height": spec.height,
        "fps": fps,
        "fps_source": fps_source,
        "frame_count": n,
        "segment_start": segment[0],
        "segment_end": segment[1],
        "tube_start": tube[0],
        "tube_end": tube[1],
        "boxes": [box] * (tube[1] - tube[0] + 1),
        "target_id": target_id,
        "source": f"bench#{index}",
    }


__all__ = ["ClipSpec", "VIDSTG_SEGMENT_S", "default_specs", "sample_row", "write_clip"]
