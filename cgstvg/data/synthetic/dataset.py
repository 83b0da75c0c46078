"""Write the whole synthetic default dataset in the real raw layouts (what the `synthesize` stage produces).

Layout under the output root (the same as for real downloads under `data/`, see README):

    hcstvg_v1/annos/{train,test}.json     hcstvg_v1/videos/<key>.mp4
    hcstvg_v2/annos/{train,val}.json      hcstvg_v2/videos/<key>.mp4        (raw v2 keys: English, img_size)
    vidstg/sent_annos/{train,val,test}_annotations.json
    vidstg/bbox_annos/<vid>.json          vidstg/videos/<vid>.mp4
    clips.parquet                         one row per clip: identity, sentence, target, GT window, hard/decoy flags
    meta.json                             the generator settings and counts

Clip i of (dataset, split) depends only on (seed, dataset, split, i), so changing one split's size leaves the
other clips byte-identical. Clips are generated and encoded in a process pool; results come back in order.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import multiprocessing
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from cgstvg.data.synthetic.clip import Clip, make_clip
from cgstvg.data.synthetic.hcstvg import hcstvg_fps, hcstvg_v1_record, hcstvg_v2_record
from cgstvg.data.synthetic.scene import SceneConfig
from cgstvg.data.synthetic.video import DEFAULT_CRF, write_mp4
from cgstvg.data.synthetic.vidstg import vidstg_records

SPLITS = {"hcstvg_v1": ("train", "test"), "hcstvg_v2": ("train", "val"), "vidstg": ("train", "val", "test")}

CLIP_SCHEMA = pa.schema(
    [
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("index", pa.int32(), nullable=False),
        pa.field("video_id", pa.string(), nullable=False),  # the HC-STVG key without '.mp4', or the VidSTG vid
        pa.field("video_path", pa.string(), nullable=False),  # relative to the output root
        pa.field("caption", pa.string(), nullable=False),
        pa.field("question", pa.string(), nullable=False),
        pa.field("colour", pa.string(), nullable=False),
        pa.field("shape", pa.string(), nullable=False),
        pa.field("action", pa.string(), nullable=False),
        pa.field("gt_start", pa.int32(), nullable=False),  # 0-based, inclusive
        pa.field("gt_end", pa.int32(), nullable=False),
        pa.field("frames", pa.int32(), nullable=False),
        pa.field("objects", pa.int32(), nullable=False),
        pa.field("same_colour", pa.bool_(), nullable=False),  # a distractor has the target's colour
        pa.field("same_shape", pa.bool_(), nullable=False),  # a distractor has the target's shape
        pa.field("hard", pa.bool_(), nullable=False),  # both of the above
        pa.field("same_action", pa.bool_(), nullable=False),  # a distractor performs the target's action
        pa.field("decoy", pa.string(), nullable=True),  # the target's other action outside the GT window, if any
    ]
)


@dataclass(frozen=True)
class SynthesizeConfig:
    """The `synthesize` section of params.yaml."""

    seed: int = 0
    scene: SceneConfig = field(default_factory=SceneConfig)
    clips: dict[str, dict[str, int]] = field(default_factory=dict)  # {dataset: {split: count}}
    crf: int = DEFAULT_CRF
    vidstg_fps: float = 10.0

    def __post_init__(self):
        for dataset, splits in self.clips.items():
            if dataset not in SPLITS:
                raise ValueError(f"synthesize.clips: unknown dataset {dataset!r} (known: {', '.join(SPLITS)})")
            if not isinstance(splits, dict):
                raise ValueError(f"synthesize.clips.{dataset}: expected {{split: count}}, got {splits!r}")
            for split, count in splits.items():
                if split not in SPLITS[dataset]:
                    known = ", ".join(SPLITS[dataset])
                    raise ValueError(f"synthesize.clips.{dataset}: unknown split {split!r} (known: {known})")
                if not isinstance(count, int) or count < 0:
                    raise ValueError(f"synthesize.clips.{dataset}.{split}: expected a count >= 0, got {count!r}")

    @classmethod
    def from_params(cls, section: dict, source: str = "params.yaml") -> SynthesizeConfig:
        """Build from the `synthesize` section; unknown keys are an error naming `source`."""
        scene_keys = {f.name for f in dataclasses.fields(SceneConfig)}
        own_keys = {f.name for f in dataclasses.fields(cls)} - {"scene"}
        unknown = set(section) - scene_keys - own_keys
        if unknown:
            raise ValueError(f"{source}: unknown synthesize key(s) {', '.join(sorted(unknown))}")
        scene: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in section.items() if k in scene_keys
        }
        own = {k: v for k, v in section.items() if k in own_keys}
        try:
            return cls(scene=SceneConfig(**scene), **own)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source}: {err}") from err


def _video_id(split: str, index: int) -> str:
    return f"synth_{split}_{index:05d}"


def _meta_row(clip: Clip, dataset: str, split: str, index: int, video_id: str, video_path: str) -> dict:
    scene = clip.scene
    target = scene.target_object
    others = [o for i, o in enumerate(scene.objects) if i != scene.target]
    return {
        "dataset": dataset,
        "split": split,
        "index": index,
        "video_id": video_id,
        "video_path": video_path,
        "caption": clip.caption,
        "question": clip.question,
        "colour": target.colour,
        "shape": target.shape,
        "action": scene.action,
        "gt_start": scene.gt[0],
        "gt_end": scene.gt[1],
        "frames": scene.config.frames,
        "objects": len(scene.objects),
        "same_colour": any(o.colour == target.colour for o in others),
        "same_shape": any(o.shape == target.shape for o in others),
        "hard": scene.hard,
        "same_action": any(a == scene.action for o in others for a, _, _ in o.actions),
        "decoy": scene.decoy,
    }


def _write_clip(job: tuple[str, str, int], root: Path, config: SynthesizeConfig) -> tuple[str, dict, dict]:
    """Generate one clip and write its video (and VidSTG box file); return (key, record, metadata row)."""
    dataset, split, index = job
    clip = make_clip(config.seed, dataset, split, index, config.scene)
    video_id = _video_id(split, index)
    if dataset == "vidstg":
        video_path = f"vidstg/videos/{video_id}.mp4"
        record, box_text = vidstg_records(clip, video_id, config.vidstg_fps)
        (root / "vidstg" / "bbox_annos" / f"{video_id}.json").write_text(box_text)
        write_mp4(root / video_path, clip.frames, config.vidstg_fps, crf=config.crf)
        key = video_id
    else:
        key = f"{video_id}.mp4"
        video_path = f"{dataset}/videos/{key}"
        record = hcstvg_v1_record(clip) if dataset == "hcstvg_v1" else hcstvg_v2_record(clip)
        write_mp4(root / video_path, clip.frames, hcstvg_fps(config.scene.frames), crf=config.crf)
    return key, record, _meta_row(clip, dataset, split, index, video_id, video_path)


def _dump(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, separators=(",", ":")))


def write_synthetic_dataset(
    root: str | os.PathLike, config: SynthesizeConfig, *, workers: int = 2, progress: bool = True
) -> dict:
    """Write every dataset and split of `config.clips` under `root` (which must exist); return a summary dict.

    `workers` processes generate and encode clips (the output does not depend on it).

    The summary (also written to `root/meta.json`) holds the settings and per-split clip counts; nothing in it
    depends on timing, so reruns are byte-identical.
    """
    root = Path(root)
    for dataset in config.clips:
        (root / dataset / "videos").mkdir(parents=True, exist_ok=True)
    if "vidstg" in config.clips:
        (root / "vidstg" / "bbox_annos").mkdir(parents=True, exist_ok=True)
    jobs = [(d, s, i) for d, splits in config.clips.items() for s, n in splits.items() for i in range(n)]
    work = functools.partial(_write_clip, root=root, config=config)
    bar = tqdm(total=len(jobs), desc="synthesize", unit="clip", disable=not progress)
    results = []
    if workers > 1 and len(jobs) > 1:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for result in pool.imap(work, jobs, chunksize=8):
                results.append(result)
                bar.update()
    else:
        for job in jobs:
            results.append(work(job))
            bar.update()
    bar.close()

    records: dict[tuple[str, str], list] = {}
    for (dataset, split, _), (key, record, _) in zip(jobs, results):
        records.setdefault((dataset, split), []).append((key, record))
    for (dataset, split), items in records.items():
        if dataset == "vidstg":
            _dump(root / "vidstg" / "sent_annos" / f"{split}_annotations.json", [record for _, record in items])
        else:
            _dump(root / dataset / "annos" / f"{split}.json", dict(items))
    rows = [row for _, _, row in results]
    pq.write_table(pa.Table.from_pylist(rows, schema=CLIP_SCHEMA), root / "clips.parquet", compression="zstd")
    summary = {
        "generator": "cgstvg.data.synthetic",
        "seed": config.seed,
        "scene": dataclasses.asdict(config.scene),
        "crf": config.crf,
        "hcstvg_fps": "img_num/20",
        "vidstg_fps": config.vidstg_fps,
        "clips": {d: dict(s) for d, s in config.clips.items()},
        "hard_fraction": round(sum(r["hard"] for r in rows) / max(len(rows), 1), 4),
        "decoy_fraction": round(sum(r["decoy"] is not None for r in rows) / max(len(rows), 1), 4),
    }
    (root / "meta.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary
