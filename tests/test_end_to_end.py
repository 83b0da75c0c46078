"""The six stages on a tiny configuration: synthesize -> normalize -> shard -> extract -> train -> evaluate."""

from __future__ import annotations

import csv
import json
import shutil

import pyarrow.parquet as pq
import pytest
import torch

from cgstvg.engine.live import read_metric
from cgstvg.evaluation.report import HEADLINE_KEYS
from cgstvg.inference.checkpoint import load_grounding_model
from pipeline import evaluate, extract, shard
from pipeline_support import REPO, run_stage, tiny_params, write_params

STAGES = ("synthesize", "normalize", "shard", "extract", "train", "evaluate")
METRIC_KEYS = {"m_tIoU", "m_vIoU", "vIoU@0.3", "vIoU@0.5", "gt_vIoU", "n"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("e2e")
    params = write_params(d, tiny_params())
    results = {stage: run_stage(stage, d, params) for stage in STAGES}
    return d, d / "out", results


def test_metrics_score_the_model_beside_the_baselines(run):
    _, out, results = run
    headline = json.loads((out / "evaluate" / "metrics.json").read_text())
    detail = json.loads((out / "evaluate" / "metrics_detail.json").read_text())
    assert detail == json.loads(json.dumps(results["evaluate"]))
    # the headline is the model's four scores and n, the same values as in the detail file
    assert headline == {"model": {k: detail["model"][k] for k in HEADLINE_KEYS}, "rejected": 0}
    assert set(detail) == {"model", "baselines"}  # no --clips: no subsets
    assert set(detail["baselines"]) == {"whole_clip_centred_box", "oracle_segment_centred_box"}
    for scores in (detail["model"], *detail["baselines"].values()):
        assert METRIC_KEYS <= set(scores) and scores["n"] == 4
        assert all(0.0 <= v <= 1.0 for k, v in scores.items() if k != "n")
    # the oracle segment is a perfect temporal answer, up to the release's inclusive-end quirk
    assert detail["baselines"]["oracle_segment_centred_box"]["m_tIoU"] > 0.8


def test_predictions_plots_and_renders(run):
    _, out, _ = run
    table = pq.read_table(out / "evaluate" / "predictions.parquet").to_pylist()
    assert len(table) == 4 and [r["sample_id"] for r in table] == sorted(r["sample_id"] for r in table)
    for r in table:
        assert r["pred_start"] < r["pred_end"] and 0.0 <= r["vIoU"] <= 1.0 and 0.0 <= r["tIoU"] <= 1.0
        assert r["box_first_frame"] >= 0 and len(r["boxes"]) >= 2
    with open(out / "evaluate" / "plots" / "tiou_viou.csv") as f:
        assert len(list(csv.DictReader(f))) == 4
    sheets = sorted((out / "evaluate" / "live" / "plots" / "images" / "renders").glob("*.png"))
    assert len(sheets) == 2 and sheets[0].name.startswith("0_")  # through DVCLive, worst vIoU first


def test_the_readme_render_is_an_animation(run, tmp_path):
    # docs/render_example.py once wrote evaluate's still PNG under the README's .gif name
    import importlib.util

    import pyarrow as pa
    from PIL import Image

    _, out, _ = run
    outputs = tmp_path / "outputs"
    for stage in ("evaluate", "normalize", "shard"):
        (outputs / stage).parent.mkdir(parents=True, exist_ok=True)
        (outputs / stage).symlink_to(out / stage)
    clips = pq.read_table(out / "synthesize" / "clips.parquet")
    (outputs / "synthesize").mkdir()  # every clip marked hard, so that the tiny run has some
    pq.write_table(
        clips.set_column(clips.schema.get_field_index("hard"), "hard", pa.array([True] * len(clips))),
        outputs / "synthesize" / "clips.parquet",
    )
    spec = importlib.util.spec_from_file_location("render_example", REPO / "docs" / "render_example.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    gif = script.main(["--outputs", str(outputs), "--out", str(tmp_path / "clip.gif")])
    from cgstvg.data.shard_reader import iter_split_samples

    stored = {len(json.loads(s["json"])["frame_ids"]) for s in iter_split_samples(out / "shard" / "hcstvg_v1" / "test")}
    with Image.open(gif) as im:  # one GIF frame per stored frame, 1/4 s each (--fps 4)
        assert im.format == "GIF" and im.n_frames in stored and im.n_frames > 1 and im.info["duration"] == 250


def test_training_outputs(run):
    _, out, results = run
    summary = json.loads((out / "train" / "summary.json").read_text())
    assert summary["steps"] == 12 and summary == json.loads(json.dumps(results["train"]))
    live = out / "train" / "live"
    for term in ("total", "loss_bbox", "loss_giou", "loss_sted", "loss_actioness", "loss_conf"):
        assert [step for step, _ in read_metric(live, f"train/loss/{term}")] == list(range(1, 13))
    lr = [value for _, value in read_metric(live, "train/lr/rest")]
    # the milestone after epoch 1 (6 steps): steps 7-12 ran at a tenth of the rate of steps 1-6
    assert lr[6] == pytest.approx(0.1 * lr[5]) == lr[-1]
    # the checkpoint grounds raw videos: it carries its params, its tokenizer and the EMA weights
    grounding = load_grounding_model(out / "train" / "model.pt")
    assert grounding.checkpoint["step"] == 12 and grounding.params.protocol == "two_pass"


def test_reruns_reuse_the_persisted_outputs(run):
    d, out, results = run
    params = d / "params.yaml"
    before = {p: p.read_bytes() for p in (out / "extract").rglob("*.tar")}
    assert run_stage("extract", d, params) == results["extract"]
    assert {p: p.read_bytes() for p in (out / "extract").rglob("*.tar")} == before
    again = run_stage("train", d, params)  # finished: resumes at its last step and runs nothing
    assert again["steps_run"] == 0 and again["resumed_from"] == 12


def _shard_extract_evaluate(out, params, raw, work):
    """shard (from `raw`), extract and evaluate (the trained model of `out`) into `work`; evaluate's result."""
    shard.main(
        ["--normalized", f"{out}/normalize", "--raw", str(raw), "--out", f"{work}/shard", "--params", str(params)]
    )
    extract.main(["--shards", f"{work}/shard", "--out", f"{work}/extract", "--params", str(params)])
    return evaluate.main(
        ["--normalized", f"{out}/normalize", "--shards", f"{work}/shard", "--features", f"{work}/extract"]
        + ["--model", f"{out}/train/model.pt", "--out", f"{work}/evaluate", "--params", str(params)]
    )


def test_evaluate_scores_what_was_sharded_and_counts_the_rejects(run, tmp_path):
    """A broken test video is a `shard` reject: `evaluate` scores the other samples, counts the reject in
    metrics.json and names its reason; with every test video broken it stops with one line naming the table."""
    d, out, _ = run
    raw = tmp_path / "raw"
    shutil.copytree(out / "synthesize", raw)
    test = pq.read_table(out / "normalize" / "hcstvg_v1" / "test.parquet").to_pylist()
    broken = test[0]
    (raw / broken["video_path"]).write_bytes(b"not an mp4")

    metrics = _shard_extract_evaluate(out, d / "params.yaml", raw, tmp_path / "one")
    headline = json.loads((tmp_path / "one" / "evaluate" / "metrics.json").read_text())
    assert headline["model"]["n"] == len(test) - 1 and headline["rejected"] == 1
    assert metrics["rejects"]["count"] == 1 and metrics["rejects"]["sample_ids"] == [broken["sample_id"]]
    assert list(metrics["rejects"]["reasons"].values()) == [1]
    assert all(b["n"] == len(test) - 1 for b in metrics["baselines"].values())  # the baselines on the same samples
    rows = pq.read_table(tmp_path / "one" / "evaluate" / "predictions.parquet").column("sample_id").to_pylist()
    assert broken["sample_id"] not in rows and len(rows) == len(test) - 1

    for row in test:
        (raw / row["video_path"]).write_bytes(b"not an mp4")
    with pytest.raises(SystemExit, match=r"test\.parquet: all 4 samples were rejected by `shard`"):
        _shard_extract_evaluate(out, d / "params.yaml", raw, tmp_path / "all")
