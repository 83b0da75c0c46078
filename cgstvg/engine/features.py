"""Run the frozen backbones once over the frame shards and store their outputs as fp16 WebDataset shards.

The release keeps Video Swin frozen yet recomputes it at every training step; here it runs once. For every frame
shard `<frames>/shard-NNNNNN.tar` a feature shard `<out>/shard-NNNNNN.tar` holds the same samples, in the same
order, under the same keys, with these members (all `.npy` are float16, loaded with `allow_pickle=False`):
- `json`: `{"sample_id", "frames": T, "passes": P, "features": {name: shape}}`;
- `motion.npy`: (T, C_m, H', W'), Video Swin over all T stored frames, one clip;
- `motion.flipped.npy`: (T, C_m, H', W') for a one-pass sample, the Swin over the horizontally mirrored frames:
  what the training flip feeds the release's online Swin. Mirroring `motion.npy` instead would keep the
  direction of every motion (a clip flipped to "moves right" would still carry features of moving left);
- `motion.pass{k}.npy`: (T_k, C_m, H', W') for k < P when the sample has P = `eval_passes` > 1: Swin over the
  frames `[k::P]` only, the clip that pass k of the release's evaluation feeds it (its windows span other frames);
- `appearance.npy`: (T, C_a, H', W') when the appearance backbone is frozen (per frame, so passes just slice it);
- `text.npy`: (L, C_t) when the text encoder is frozen (the sentence's tokens, no padding), and
  `text.flipped.npy` for the sentence with 'left' and 'right' swapped when that differs (the training flip swaps
  them, so a flipped clip reads the features of its swapped sentence).

Frames are decoded and normalized by `cgstvg.data.shard_reader` and `cgstvg.data.collate` (the loader's own
code). Batches hold consecutive samples of one shard with the same (T, H, W), up to `batch_frames` frames, so the
result of a shard never depends on another shard. CUDA with autocast when available, fp32 on the CPU; then rounded
to fp16.

Resumable like `shard`: after a feature shard is written (atomically) a marker `shard-NNNNNN.done.json` records
the input shard's sha256, the extraction fingerprint (backbone params and weights, seed, which features) and the
output's sha256. A rerun keeps every shard whose marker still matches and recomputes the others, saying why; the
output is byte-identical to an uninterrupted run (fixed tar headers, deterministic kernels per batch). The frame
shards are verified against their manifest before any is read (`cgstvg.data.shard_reader.verified_manifest`).

A split is planned (`plan_extraction`), each of its frame shards extracted on its own (`extract_shard`, in any
process: a shard depends on nothing else), then finished (`finish_extraction` writes the manifest);
`extract_split` runs the three in this process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import cast

import torch
import webdataset as wds
from torch import nn
from tqdm import tqdm

from cgstvg.data.augment import swap_left_right
from cgstvg.data.collate import normalize_frames
from cgstvg.data.feature_arrays import npy_bytes
from cgstvg.data.shard_reader import clip_from_sample, iter_shard_samples, verified_manifest
from cgstvg.utils.atomic import atomic_path, write_json
from cgstvg.utils.hashing import sha256_file

FEATURE_NAMES = ("motion", "appearance", "text")
_TAR_FIELDS = {"user": "", "group": "", "mode": 0o444, "mtime": 0}  # fixed headers: reruns are byte-identical


@dataclasses.dataclass
class FrozenBackbones:
    """The modules to run. `motion` always; `appearance` / `text` only when params freeze them."""

    motion: nn.Module
    appearance: nn.Module | None = None
    text: nn.Module | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for n in FEATURE_NAMES if getattr(self, n) is not None)

    def to(self, device: torch.device) -> FrozenBackbones:
        for n in self.names:
            getattr(self, n).to(device).eval().requires_grad_(False)
        return self


def _groups(clips: list[dict], batch_frames: int) -> Iterator[list[dict]]:
    """Consecutive clips with the same (T, H, W), at most `batch_frames` frames per group (at least one clip)."""
    group: list[dict] = []
    for c in clips:
        shape = tuple(c["frames"].shape)
        if group and (tuple(group[0]["frames"].shape) != shape or (len(group) + 1) * shape[0] > batch_frames):
            yield group
            group = []
        group.append(c)
    if group:
        yield group


# Bumped when the members of a feature shard change for the same settings, so older shards are recomputed.
FEATURE_LAYOUT = 2  # 2: `motion.flipped`


class FeatureExtractor:
    """Computes the feature members of the samples of one shard (see the module docstring)."""

    def __init__(self, backbones: FrozenBackbones, device: torch.device, amp: bool = True, batch_frames: int = 256):
        if batch_frames < 1:
            raise ValueError(f"extract.batch_frames must be >= 1, got {batch_frames}")
        self.backbones = backbones.to(device)
        self.device = device
        self.amp = amp and device.type == "cuda"
        self.batch_frames = batch_frames

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.float16) if self.amp else contextlib.nullcontext()

    @torch.inference_mode()
    def _motion(self, clips: list[torch.Tensor]) -> list[torch.Tensor]:
        """Same-shape clips (T, 3, H, W) -> per clip (T, C, H', W'), one Swin batch."""
        t = clips[0].shape[0]
        with self._autocast():
            out = self.backbones.motion(torch.cat(clips).to(self.device), t)
        return list(out.float().cpu().split(t))

    @torch.inference_mode()
    def _appearance(self, clips: list[torch.Tensor]) -> list[torch.Tensor]:
        sizes = [c.shape[0] for c in clips]
        with self._autocast():
            out = cast(nn.Module, self.backbones.appearance)(torch.cat(clips).to(self.device))
        return list(out.float().cpu().split(sizes))

    @torch.inference_mode()
    def _text(self, sentences: list[str]) -> list[torch.Tensor]:
        with self._autocast():
            hidden, pad = cast(nn.Module, self.backbones.text)(sentences)
        hidden, pad = hidden.float().cpu(), pad.cpu()
        return [h[~p] for h, p in zip(hidden, pad)]

    def shard_members(self, url: str) -> list[dict[str, bytes]]:
        """The feature members of every sample of the frame shard `url`, in its order."""
        clips = []
        for sample in iter_shard_samples(url):
            clip = clip_from_sample(sample)
            clips.append(
                {
                    "key": sample["__key__"],
                    "frames": normalize_frames(clip["frames"]),
                    "sentence": clip["sentence"],
                    "passes": int(clip["meta"].get("eval_passes", 1)),
                }
            )
        feats: dict[str, dict[str, torch.Tensor]] = {c["key"]: {} for c in clips}
        for group in _groups(clips, self.batch_frames):
            keys = [c["key"] for c in group]
            frames = [c["frames"] for c in group]
            for k, f in zip(keys, self._motion(frames)):
                feats[k]["motion"] = f
            if group[0]["passes"] == 1:  # evaluation passes are never flipped
                for k, f in zip(keys, self._motion([f.flip(-1) for f in frames])):
                    feats[k]["motion.flipped"] = f
            if self.backbones.appearance is not None:
                for k, f in zip(keys, self._appearance(frames)):
                    feats[k]["appearance"] = f
            if self.backbones.text is not None:
                for k, f in zip(keys, self._text([c["sentence"] for c in group])):
                    feats[k]["text"] = f
                swapped = [(c["key"], swap_left_right(c["sentence"])) for c in group]
                swapped = [(k, s) for (k, s), c in zip(swapped, group) if s != c["sentence"]]
                if swapped:
                    for (k, _), f in zip(swapped, self._text([s for _, s in swapped])):
                        feats[k]["text.flipped"] = f
            passes = group[0]["passes"]
            if passes > 1:
                if any(c["passes"] != passes for c in group):
                    raise ValueError(f"{url}: samples {keys} mix eval_passes values")
                for p in range(passes):
                    # passes of same-length clips have the same length, so each pass is one Swin batch
                    for k, f in zip(keys, self._motion([f[p::passes] for f in frames])):
                        feats[k][f"motion.pass{p}"] = f
        members = []
        for c in clips:
            named = feats[c["key"]]
            meta = {
                "sample_id": c["key"],
                "frames": int(c["frames"].shape[0]),
                "passes": c["passes"],
                "features": {n: list(v.shape) for n, v in sorted(named.items())},
            }
            m = {"__key__": c["key"], "json": json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()}
            m.update({f"{n}.npy": npy_bytes(v) for n, v in sorted(named.items())})
            members.append(m)
        return members


def _tar_bytes(samples: list[dict[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with wds.TarWriter(buf, encoder=False, **_TAR_FIELDS) as tw:
        for s in samples:
            tw.write(s)
    return buf.getvalue()


def _stale_reason(tar: Path, marker: dict | None, shard: dict, fingerprint: str) -> str | None:
    """Why the finished feature shard `tar` cannot be reused (None when it can)."""
    if marker is None or not tar.is_file():
        return "it has no marker (its run was interrupted)" if marker is None else "its marker has no tar"
    if marker.get("input_sha256") != shard["sha256"]:
        return "its frame shard changed"
    if marker.get("fingerprint") != fingerprint:
        return "the extraction settings changed (fingerprint)"
    if tar.stat().st_size != marker.get("bytes") or sha256_file(tar) != marker.get("sha256"):
        return "its bytes differ from its marker (damaged)"
    return None


def extract_shard(
    frame_dir: str | os.PathLike, out_dir: str | os.PathLike, shard: dict, extractor: FeatureExtractor, fingerprint: str
) -> tuple[dict, bool]:
    """Write the feature shard of one frame shard, or reuse a finished one; returns (its marker, reused).

    A finished shard is reused only when its marker names the same input sha256 and fingerprint and the tar's
    size and sha256 still match, so an interrupted run resumes without recomputing what it finished.
    """
    frame_dir, out_dir = Path(frame_dir), Path(out_dir)
    name = shard["name"]
    tar, marker_path = out_dir / name, out_dir / (name[: -len(".tar")] + ".done.json")
    marker = json.loads(marker_path.read_text()) if marker_path.is_file() else None
    stale = _stale_reason(tar, marker, shard, fingerprint)
    if stale is None:
        return cast(dict, marker), True  # not stale: the marker exists
    if tar.is_file() or marker is not None:  # a finished or damaged shard is discarded: say why
        print(f"extract: {tar}: {stale}; recomputing it")
    marker_path.unlink(missing_ok=True)
    members = extractor.shard_members(str(frame_dir / name))
    if len(members) != shard["samples"]:
        raise ValueError(f"{frame_dir / name}: read {len(members)} samples, its manifest lists {shard['samples']}")
    data = _tar_bytes(members)
    with atomic_path(tar) as tmp:
        tmp.write_bytes(data)
    marker = {
        "name": name,
        "samples": len(members),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "input_sha256": shard["sha256"],
        "fingerprint": fingerprint,
    }
    write_json(marker_path, marker)
    return marker, False


def plan_extraction(frame_dir: str | os.PathLike, out_dir: str | os.PathLike) -> dict:
    """Plan one split: returns the frame shards' manifest, whose `shards` are the units of `extract_shard`.

    The frame shards are verified against it first (IntegrityError naming the file). Creates `out_dir` and removes
    the feature shards (and markers) whose frame shard no longer exists.
    """
    frame_dir, out_dir = Path(frame_dir), Path(out_dir)
    manifest = verified_manifest(frame_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    expected = {s["name"] for s in manifest["shards"]}
    for stale in out_dir.glob("shard-*"):
        if stale.name.split(".")[0] + ".tar" not in expected:
            stale.unlink()
    return manifest


def finish_extraction(
    frame_manifest: dict,
    out_dir: str | os.PathLike,
    results: Iterable[tuple[dict, bool]],
    fingerprint: str,
    features: Sequence[str],
) -> dict:
    """Write the split's feature `manifest.json` from what `extract_shard` returned for each shard of
    `frame_manifest`, in its order; returns the manifest plus `reused_shards`."""
    written, reused = [], 0
    for marker, was_reused in results:
        written.append(marker)
        reused += int(was_reused)
    out = {
        "dataset": frame_manifest.get("dataset"),
        "split": frame_manifest.get("split"),
        "fingerprint": fingerprint,
        "samples": sum(m["samples"] for m in written),
        "bytes": sum(m["bytes"] for m in written),
        "shards": [{k: m[k] for k in ("name", "samples", "bytes", "sha256")} for m in written],
        "features": list(features),
    }
    write_json(Path(out_dir) / "manifest.json", out)
    out["reused_shards"] = reused
    return out


def extract_split(
    frame_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    extractor: FeatureExtractor,
    fingerprint: str,
    progress: bool = True,
) -> dict:
    """Feature shards for one split's frame shards, in this process: `plan_extraction`, `extract_shard` per shard,
    `finish_extraction`. Resumes from finished shards; `fingerprint` identifies the extraction settings (a marker
    with another fingerprint is stale). Returns the manifest it writes."""
    frame_dir = Path(frame_dir)
    manifest = plan_extraction(frame_dir, out_dir)
    desc = f"extract {frame_dir.parent.name}/{frame_dir.name}"
    shards = tqdm(manifest["shards"], desc=desc, unit="shard", disable=not progress)
    results = (extract_shard(frame_dir, out_dir, shard, extractor, fingerprint) for shard in shards)
    return finish_extraction(manifest, out_dir, results, fingerprint, extractor.backbones.names)


__all__ = [
    "FEATURE_NAMES",
    "FeatureExtractor",
    "FrozenBackbones",
    "extract_shard",
    "extract_split",
    "finish_extraction",
    "plan_extraction",
]
