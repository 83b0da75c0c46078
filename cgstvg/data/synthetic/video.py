"""Write a clip as an H.264 mp4 that reruns reproduce byte for byte.

PyAV (libx264) rather than imageio/ffmpeg subprocesses: it is a pinned dependency, needs no system binary, and
lets us fix every option that could change the bytes: one encoder thread, bit-exact muxing, no B-frame
reordering (decoders that count packets see exactly one frame per packet), and no macroblock-tree rate control:
with mbtree on, x264 gave different bytes for the same frames from run to run at small sizes (seen at 48x64;
it reads memory whose content varies between runs), which would break DVC's byte-identical reruns.
"""

from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np

DEFAULT_CRF = 20  # object colours survive it (the tests decode and check them); ~50 kB per 32x96x128 clip


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: float | Fraction, *, crf: int = DEFAULT_CRF) -> None:
    """Encode `frames` (T, H, W, 3) uint8 RGB to `path` (libx264, yuv420p) at container rate `fps`.

    H and W must be even (yuv420p). The same frames, fps and crf always give the same bytes.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"{path}: expected (T, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    t, h, w, _ = frames.shape
    if t == 0 or h % 2 or w % 2:
        raise ValueError(f"{path}: need at least one frame and even height/width for yuv420p, got {frames.shape}")
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(os.fspath(path), mode="w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.thread_count = 1
        stream.options = {
            "crf": str(crf),
            "preset": "veryfast",  # half the CPU of "fast" for 3% more bytes on these clips
            "x264-params": "threads=1:bframes=0:scenecut=0:mbtree=0",
        }
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
