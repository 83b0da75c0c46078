"""Small real videos and normalized rows for the shard and loader tests (PyAV + libx264, written on the fly)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def write_video(
    path: Path, frames: int, *, width: int = 64, height: int = 48, fps: int = 10, faststart: bool = False
) -> Path:
    """An H.264 mp4 whose frame i has red level 8*i and a white square moving right (so frames differ)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"g": "8"}
        for i in range(frames):
            img = np.zeros((height, width, 3), np.uint8)
            img[..., 0] = (8 * i) % 256
            x = (2 * i) % (width - 8)
            img[8:16, x : x + 8] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def sample_row(
    sample_id: str,
    video_path: str,
    *,
    dataset: str = "hcstvg_v1",
    split: str = "train",
    frames: int = 32,
    width: int = 64,
    height: int = 48,
    tube: tuple[int, int] = (8, 20),
    segment: tuple[int, int] | None = None,
    sentence: str = "the man on the left walks to the right",
    fps: float | None = None,
) -> dict:
    """A SAMPLE_SCHEMA row with one box per tube frame (box i shifted by i pixels)."""
    s, e = tube
    seg = segment or (0, frames - 1)
    boxes = [[float(4 + i % 20), 6.0, float(20 + i % 20), 30.0] for i in range(e - s + 1)]
    return {
        "dataset": dataset,
        "split": split,
        "sample_id": sample_id,
        "video_id": Path(video_path).stem,
        "video_path": video_path,
        "sentence": sentence,
        "qtype": "declar",
        "width": width,
        "height": height,
        "fps": fps if fps is not None else frames / 20,
        "fps_source": "img_num/20",
        "frame_count": frames,
        "segment_start": seg[0],
        "segment_end": seg[1],
        "tube_start": s,
        "tube_end": e,
        "boxes": boxes,
        "target_id": None,
        "source": f"annos/{split}.json#{sample_id}",
    }
