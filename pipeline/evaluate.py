"""Stage `evaluate`: score the trained model (and the trivial baselines) on one split; predictions, plots, renders.

    python -m pipeline.evaluate --normalized outputs/normalize --shards outputs/shard --features outputs/extract \
        --model outputs/train/model.pt --out outputs/evaluate [--params params.yaml]
    torchrun --nproc_per_node 2 -m pipeline.evaluate ...    # the same metrics, split over processes

Reads `train.dataset` (the dataset evaluated), `train.input` (which features are cached) and `evaluate`:
`split`, `protocol` (two_pass: the release's two interleaved passes; single_pass), `metric_protocol` (release:
the authors' evaluator, quirks included; strict: the inclusive-end off-by-one fixed), `batch_size`, `renders`.
Writes (rank 0):
- `<out>/metrics.json` for `dvc metrics`, the headline: `model` (m_tIoU, m_vIoU, vIoU@0.3, vIoU@0.5, n) and
  `rejected` only, so that `dvc metrics show`, `dvc metrics diff` and `dvc exp show` stay readable. A split with
  samples that `shard` rejected is scored on the rest: `rejected` counts them and the run says so (all rejected:
  an error);
- `<out>/metrics_detail.json`, every score: `model` (the headline keys, gt_vIoU, gt_vIoU@R and on VidSTG `qtype`:
  the same per declar / inter), `baselines` (the same for `whole_clip_centred_box` and
  `oracle_segment_centred_box`) and `subsets` (below); `dvc metrics show --targets` reads it
  (layout: `cgstvg.evaluation.report`);
- `<out>/predictions.parquet`: one row per sample (GT tube, predicted segment [start, end), boxes from
  `box_first_frame` on, tIoU, vIoU, gt_vIoU);
- `<out>/plots/viou_histogram.csv`, `<out>/plots/tiou_viou.csv` for `dvc plots`;
- `<out>/live/`, DVCLive's folder: `plots/images/renders/<i>_<sample_id>.png`, `renders` samples spread from the
  lowest vIoU (i = 0) to the highest, each a contact sheet of 8 frames across the clip (GT green, prediction red,
  per-frame IoU, frame id and both segments in each caption).

With `--clips` (the synthetic default's `clips.parquet`), `metrics_detail.json` also holds `subsets`: the model's
scores on the clips of each flag (`hard`: a same-colour and a same-shape distractor; `decoy`: the target also
performs another action), matched by dataset, split and video id; clips of other datasets (real data) match nothing
and add no subset.
"""

from __future__ import annotations

import argparse
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from cgstvg.data.feature_loader import FeatureShardLoader
from cgstvg.data.shard_reader import clip_from_sample, iter_split_samples, read_rejects, verified_manifest
from cgstvg.engine.batch_model import BatchModel
from cgstvg.engine.distributed import init_distributed, shutdown_distributed
from cgstvg.engine.frozen_backbones import cached_features, input_mode
from cgstvg.evaluation.evaluate_loop import GroundTruth, evaluate_baselines, evaluate_model
from cgstvg.evaluation.metrics import RELEASE_ON_MISSING
from cgstvg.evaluation.report import DETAIL_FILE, HEADLINE_FILE, detail, headline
from cgstvg.inference.checkpoint import load_grounding_model
from cgstvg.inference.errors import CheckpointError
from cgstvg.utils.atomic import write_json, write_parquet
from cgstvg.utils.integrity import IntegrityError
from cgstvg.utils.params import load_params, section
from cgstvg.visualize import contact_sheet, draw_prediction, per_sample_plot_data
from pipeline import run_stage

PREDICTION_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("dataset", pa.string()),
        ("split", pa.string()),
        ("video_id", pa.string()),
        ("qtype", pa.string()),
        ("sentence", pa.string()),
        ("gt_start", pa.int32()),
        ("gt_end", pa.int32()),
        ("pred_start", pa.int32()),
        ("pred_end", pa.int32()),
        ("box_first_frame", pa.int32()),
        ("boxes", pa.list_(pa.list_(pa.float32(), 4))),
        ("tIoU", pa.float64()),
        ("vIoU", pa.float64()),
        ("gt_vIoU", pa.float64()),
    ]
)


def read_ground_truth(path: Path) -> dict[str, GroundTruth]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no normalized table (run the `normalize` stage first)")
    return {r["sample_id"]: GroundTruth.from_row(r) for r in pq.read_table(path).to_pylist()}


SUBSET_FLAGS = ("hard", "decoy")


def subset_metrics(rows: list[dict], clips: Path | None) -> dict[str, dict]:
    """m_tIoU, m_vIoU, vIoU@0.3 and vIoU@0.5 (strict >, as the release) of the rows whose clip has each flag."""
    if clips is None or not clips.is_file():
        return {}
    table = pq.read_table(clips).to_pylist()
    out = {}
    for flag in SUBSET_FLAGS:
        ids = {(c["dataset"], c["split"], c["video_id"]) for c in table if c.get(flag)}
        chosen = [r for r in rows if (r["dataset"], r["split"], r["video_id"]) in ids]
        if not chosen:
            continue
        tiou = np.array([r["tIoU"] for r in chosen])
        viou = np.array([r["vIoU"] for r in chosen])
        out[flag] = {
            "m_tIoU": float(tiou.mean()),
            "m_vIoU": float(viou.mean()),
            "vIoU@0.3": float((viou > 0.3).mean()),
            "vIoU@0.5": float((viou > 0.5).mean()),
            "n": float(len(chosen)),
        }
    return out


def render_choice(rows: list[dict], count: int) -> list[dict]:
    """`count` rows spread over the vIoU ranking (worst first ... best last), without repeats."""
    if count <= 0 or not rows:
        return []
    ranked = sorted(rows, key=lambda r: (np.nan_to_num(r["vIoU"], nan=-1.0), r["sample_id"]))
    picks = sorted({round(q * (len(ranked) - 1)) for q in np.linspace(0, 1, min(count, len(ranked)))})
    return [ranked[i] for i in picks]


def draw_sample(row: dict, sample: dict, gt: GroundTruth) -> np.ndarray:
    """One predictions row drawn on its stored frames (a raw shard sample): (T, H, W, 3) uint8."""
    clip = clip_from_sample(sample)
    n = len(row["boxes"])
    return draw_prediction(
        clip["frames"].permute(0, 2, 3, 1).numpy(),
        clip["frame_ids"].numpy(),
        sentence=row["sentence"],
        pred_segment=(row["pred_start"], row["pred_end"]),
        pred_frames=np.arange(row["box_first_frame"], row["box_first_frame"] + n),
        pred_boxes=row["boxes"],
        gt_segment=gt.tube,
        gt_boxes=gt.boxes,
        original_size=tuple(clip["orig_size"]),
    )


def render(rows: list[dict], split_dir: Path, gt: dict[str, GroundTruth], live_dir: Path) -> list[Path]:
    """Draw the chosen rows on their stored frames (read back from the frame shards) and log each as a still
    contact sheet through DVCLive: `<live_dir>/plots/images/renders/<i>_<sample_id>.png` (i = 0: the lowest vIoU),
    the image plots of `dvc plots show`, Studio and VS Code. (DVCLive re-saves an image through PIL, which keeps one
    frame of a GIF: hence stills; `cgstvg ground --render` and docs/render_example.py write the animation.)"""
    from dvclive import Live  # rank 0 only

    live = Live(os.fspath(live_dir), resume=False, report=None, save_dvc_exp=False, dvcyaml=False, monitor_system=False)
    wanted = {r["sample_id"]: r for r in rows}
    position = {r["sample_id"]: i for i, r in enumerate(rows)}
    written = []
    for sample in iter_split_samples(split_dir):
        row = wanted.get(sample["__key__"])
        if row is None:
            continue
        drawn = draw_sample(row, sample, gt[row["sample_id"]])
        name = f"renders/{position[row['sample_id']]}_{row['sample_id']}.png"
        live.log_image(name, contact_sheet(drawn))
        written.append(Path(live.plots_dir) / "images" / name)
    live.end()
    return written


def reason_counts(rejects: dict[str, str]) -> str:
    """'reason: count, ...' of rejected samples, most frequent first."""
    return ", ".join(f"{r}: {n}" for r, n in Counter(rejects.values()).most_common())


def scored_ground_truth(gt: dict, rejects: dict[str, str], table: Path) -> tuple[dict, dict[str, str]]:
    """The samples that are scored (those `shard` did not reject) and the rejects among the table's rows.

    A split with rejects is scored on what was sharded, the rejects counted in the metrics; none left is an error."""
    rejects = {sid: reason for sid, reason in rejects.items() if sid in gt}
    scored = {sid: g for sid, g in gt.items() if sid not in rejects}
    if not scored:
        raise IntegrityError(
            f"{table}: all {len(gt)} samples were rejected by `shard` ({reason_counts(rejects)}); nothing to score "
            "(fix the videos its rejects.parquet names, then rerun `shard`)"
        )
    return scored, rejects


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--normalized", required=True, type=Path, help="normalize output, e.g. outputs/normalize")
    parser.add_argument("--shards", required=True, type=Path, help="shard output, e.g. outputs/shard")
    parser.add_argument("--features", required=True, type=Path, help="extract output, e.g. outputs/extract")
    parser.add_argument("--model", required=True, type=Path, help="grounding checkpoint, e.g. outputs/train/model.pt")
    parser.add_argument("--out", required=True, type=Path, help="output folder, e.g. outputs/evaluate")
    parser.add_argument("--params", default="params.yaml", type=Path)
    parser.add_argument("--clips", type=Path, help="synthetic clips.parquet: also score its hard / decoy subsets")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    cfg = section(params, "evaluate", args.params)
    dataset = section(params, "train", args.params)["dataset"]
    split = cfg["split"]
    torch.set_num_threads(int(cfg.get("threads", 2)))
    env = init_distributed(str(cfg.get("device", "auto")))
    try:
        table = args.normalized / dataset / f"{split}.parquet"
        # every sample of the split is scored or a known reject: shards missing samples fail instead of scoring fewer
        verified_manifest(args.shards / dataset / split, table)
        gt, rejects = scored_ground_truth(read_ground_truth(table), read_rejects(args.shards / dataset / split), table)
        grounding = load_grounding_model(args.model, device=env.device)
        model = BatchModel(grounding.model)
        names = cached_features(input_mode(params, args.params))
        loader = FeatureShardLoader(
            args.shards / dataset / split,
            args.features / dataset / split,
            features=names,
            batch_size=int(cfg["batch_size"]),
            train=False,
        )
        options = {
            "metric_protocol": cfg["metric_protocol"],
            "on_missing": RELEASE_ON_MISSING[dataset],
            "per_qtype": dataset == "vidstg",
        }
        summary, rows = evaluate_model(
            model, loader, gt, env, protocol=cfg["protocol"], amp=bool(cfg.get("amp", True)), **options
        )
        metrics = detail(summary, {})
        if env.is_main:
            train_gt = read_ground_truth(args.normalized / dataset / "train.parquet").values()
            metrics = detail(
                summary, evaluate_baselines(gt, train_gt, **options), subset_metrics(rows, args.clips), rejects
            )
            write_json(args.out / HEADLINE_FILE, headline(summary, len(rejects)))
            write_json(args.out / DETAIL_FILE, metrics)
            write_parquet(args.out / "predictions.parquet", pa.Table.from_pylist(rows, schema=PREDICTION_SCHEMA))
            per_sample_plot_data(
                args.out / "plots", [r["tIoU"] for r in rows], [r["vIoU"] for r in rows], [r["sample_id"] for r in rows]
            )
            render(
                render_choice(rows, int(cfg.get("renders", 4))), args.shards / dataset / split, gt, args.out / "live"
            )
            m = summary
            if rejects:
                print(
                    f"evaluate: {dataset}/{split}: {len(rejects)} of {len(rejects) + len(rows)} samples were rejected "
                    f"by `shard` ({reason_counts(rejects)}; see {args.shards / dataset / split / 'rejects.parquet'}): "
                    "scored on the rest, so not comparable with figures over the whole split"
                )
            print(
                f"evaluate: {dataset}/{split} ({cfg['protocol']}, {len(rows)} samples): m_tIoU {m['m_tIoU']:.4f} "
                f"m_vIoU {m['m_vIoU']:.4f} vIoU@0.3 {m['vIoU@0.3']:.4f} vIoU@0.5 {m['vIoU@0.5']:.4f}"
            )
            for kind, b in metrics["baselines"].items():
                print(
                    f"evaluate: baseline {kind}: m_tIoU {b['m_tIoU']:.4f} m_vIoU {b['m_vIoU']:.4f} "
                    f"vIoU@0.3 {b['vIoU@0.3']:.4f}"
                )
            for flag, b in metrics.get("subsets", {}).items():
                print(
                    f"evaluate: {flag} clips ({b['n']}): m_tIoU {b['m_tIoU']:.4f} m_vIoU {b['m_vIoU']:.4f} "
                    f"vIoU@0.3 {b['vIoU@0.3']:.4f} vIoU@0.5 {b['vIoU@0.5']:.4f}"
                )
        return metrics
    except (IntegrityError, CheckpointError) as err:  # a shard or model.pt that does not verify: one line naming it
        raise SystemExit(f"evaluate: {err}") from err
    finally:
        shutdown_distributed()


if __name__ == "__main__":
    run_stage("evaluate", main)
