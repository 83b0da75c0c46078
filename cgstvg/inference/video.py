"""A user's video, decoded with decord: checks with one-line errors, metadata, and chunked reads of chosen frames.

The VideoReader is opened in the process that reads from it (decord readers do not survive a fork). Frames come
back as (T, 3, h, w) uint8 at any number of sizes from one decode, resized with the training resize
(`cgstvg.data.resize.resize_frames`: bilinear, antialiased), `chunk` frames at a time, so a long video at full
resolution is never held in memory at once.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cgstvg.inference.errors import VideoError

if TYPE_CHECKING:
    import torch

DEFAULT_MAX_SECONDS = 600.0
"""Videos longer than this (10 minutes) are refused unless the caller raises the limit."""


@dataclass(frozen=True)
class VideoInfo:
    """path; frames (count); fps (the container's average, which frame sampling uses); height, width in pixels of
    the decoded frames; frame_times: each frame's (start, end) in seconds from its pts, empty when unknown.

    Times come from the pts, not from frame / fps: in a variable-frame-rate video the two part (frame 7 of a clip
    that paused early can start at 0.70 s where 7 / average fps says 2.25 s)."""

    path: str
    frames: int
    fps: float
    height: int
    width: int
    frame_times: tuple[tuple[float, float], ...] = ()

    def time_of(self, frame: int) -> float:
        """Start time (s) of `frame`; `frames` (one past the last) gives the end of the last frame."""
        if not self.frame_times:
            return frame / self.fps
        if frame >= self.frames:
            return self.frame_times[-1][1]
        return self.frame_times[frame][0]

    @property
    def duration_s(self) -> float:
        return self.time_of(self.frames)

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "frames": self.frames,
            "fps": self.fps,
            "height": self.height,
            "width": self.width,
            "duration_s": self.duration_s,
        }


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Video:
    """An opened, checked video. Use `open_video`."""

    def __init__(self, path: Path, reader, info: VideoInfo):
        self.path = path
        self._reader = reader
        self.info = info

    def read(self, frame_ids: Sequence[int], sizes: Sequence[tuple[int, int]], chunk: int = 32) -> list[torch.Tensor]:
        """Decode `frame_ids` (0-based) once and return them at each (h, w) of `sizes`: a list of (T, 3, h, w)
        uint8 tensors, in the order of `sizes`."""
        # Imported here: the checks of `open_video` run before torch is loaded, so a mistyped path fails at once.
        import torch

        from cgstvg.data.resize import resize_frames

        ids = [int(i) for i in frame_ids]
        bad = [i for i in ids if not 0 <= i < self.info.frames]
        if bad:
            raise VideoError(f"{self.path}: frames {bad[:5]} are outside the video's {self.info.frames} frames")
        outs: list[list[torch.Tensor]] = [[] for _ in sizes]
        for start in range(0, len(ids), chunk):
            try:
                batch = self._reader.get_batch(ids[start : start + chunk]).asnumpy()
            except Exception as exc:  # decord raises its own DECORDError (and RuntimeError) on broken streams
                raise VideoError(
                    f"{self.path}: cannot decode frames {ids[start]}..{ids[start : start + chunk][-1]} "
                    f"({_first_line(exc)})"
                ) from None
            frames = torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()  # (t, 3, H, W) uint8
            for out, size in zip(outs, sizes):
                out.append(resize_frames(frames, size))
        return [
            torch.cat(out) if out else torch.empty(0, 3, *size, dtype=torch.uint8) for out, size in zip(outs, sizes)
        ]


def open_video(path: str | os.PathLike, max_seconds: float | None = DEFAULT_MAX_SECONDS) -> Video:
    """Open and check a video: it exists, decodes, has frames and a frame rate, and lasts at most `max_seconds`
    (None: no limit). Raises VideoError with one line naming the file."""
    path = Path(path)
    if not path.exists():
        raise VideoError(f"{path}: video not found")
    if not path.is_file():
        raise VideoError(f"{path}: not a video file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: cannot decode the video (the file is empty)")
    import decord  # imported here: decord is only needed once a video is actually opened

    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
        frames = len(reader)
        fps = float(reader.get_avg_fps())
        first = reader[0].shape if frames else None
        stamps = reader.get_frame_timestamp(list(range(frames))) if frames else None
    except Exception as exc:  # decord raises DECORDError / RuntimeError for anything it cannot demux or decode
        raise VideoError(f"{path}: cannot decode the video ({_first_line(exc)})") from None
    if frames == 0 or first is None:
        raise VideoError(f"{path}: the video has no frames")
    if not math.isfinite(fps) or fps <= 0:
        raise VideoError(f"{path}: the video has no usable frame rate (got {fps})")
    times = tuple((float(a), float(b)) for a, b in stamps) if stamps is not None else ()
    if len(times) != frames or not all(math.isfinite(a) and math.isfinite(b) for a, b in times):
        times = ()  # no usable pts: times fall back to frame / fps
    info = VideoInfo(
        path=str(path), frames=frames, fps=fps, height=int(first[0]), width=int(first[1]), frame_times=times
    )
    if max_seconds is not None and info.duration_s > max_seconds:
        raise VideoError(
            f"{path}: the video lasts {info.duration_s:.1f} s, over the limit of {max_seconds:g} s "
            f"(raise it with --max-seconds)"
        )
    return Video(path, reader, info)


__all__ = ["DEFAULT_MAX_SECONDS", "Video", "VideoInfo", "open_video"]
