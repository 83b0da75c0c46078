"""The release's per-sample video loading, re-implemented for the benchmark (datasets/hcstvg.py, vidstg.py).

What the release does for every sample, every epoch (`load_frames`, then the `Normalize` transform):
1. run ffmpeg as a subprocess (ffmpeg-python: `ffmpeg -i <video> -f rawvideo -pix_fmt rgb24 pipe:`, run with
   `capture_stdout=True, quiet=True`, i.e. stdout and stderr piped and read by `Popen.communicate`), which decodes
   the WHOLE video at full resolution, with ffmpeg's default (automatic) decoder threads;
2. `np.frombuffer(out, np.uint8).reshape(-1, h, w, 3)` with the annotation's h, w, and index the sampled frames
   (the raw bytes of the whole video stay referenced until `load_frames` returns);
3. per frame `ToTensor()` (float 0..1, CHW) and `Resize((420, W), antialias=True)`, then `torch.stack`;
4. `F.normalize` with the ImageNet mean/std (the training transforms' `RandomResize` resizes to the current size,
   which torchvision returns unchanged, so it is left out).
The release's retry loop and its dummy frames on failure are not reproduced: here a failed decode raises.
VidSTG's loader uses torchvision's default antialias, which was False in the torchvision the release pins (0.15);
this re-implementation uses HC-STVG's `antialias=True` for both, as our shards do, so the outputs are comparable.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import torch
from torchvision import transforms as T
from torchvision.transforms import functional as F

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def ffmpeg_exe() -> str:
    """The ffmpeg binary: the one on PATH, else the static build shipped by `imageio-ffmpeg` (the `bench` extra)."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError as e:
        raise SystemExit("no ffmpeg on PATH and imageio-ffmpeg is not installed: pip install -e '.[bench]'") from e
    return imageio_ffmpeg.get_ffmpeg_exe()


def decode_whole_video(exe: str, path: str, height: int, width: int) -> np.ndarray:
    """Every frame of `path` at full resolution, as the release reads it: (N, height, width, 3) uint8, read-only.

    `communicate` (what ffmpeg-python's `run` calls) collects stdout in chunks and joins them, so the raw video
    is briefly held twice, exactly as in the release.
    """
    proc = subprocess.Popen(
        [exe, "-i", path, "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{path}: ffmpeg exited with {proc.returncode}: {err.decode(errors='replace')[-500:]}")
    return np.frombuffer(out, np.uint8).reshape(-1, height, width, 3)


def load_frames(
    exe: str, path: str, frame_ids: list[int], orig_size: tuple[int, int], size: tuple[int, int]
) -> torch.Tensor:
    """The release's `load_frames`: (T, 3, size[0], size[1]) float32 in 0..1, T = len(frame_ids)."""
    video = decode_whole_video(exe, path, *orig_size)
    frames = video[frame_ids]
    resize = T.Resize(list(size), antialias=True)
    to_tensor = T.ToTensor()
    return torch.stack([resize(to_tensor(frame)) for frame in frames])


def release_sample(
    exe: str, path: str, frame_ids: list[int], orig_size: tuple[int, int], size: tuple[int, int]
) -> torch.Tensor:
    """One sample's frames as the release feeds them to the model: (T, 3, H, W) float32, ImageNet-normalized."""
    return F.normalize(load_frames(exe, path, frame_ids, orig_size, size), mean=IMAGENET_MEAN, std=IMAGENET_STD)


__all__ = ["decode_whole_video", "ffmpeg_exe", "load_frames", "release_sample"]
