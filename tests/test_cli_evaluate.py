"""`cgstvg evaluate`: a checkpoint in the authors' release layout scored on a tiny normalized + sharded split.

The release checkpoint holds a tiny model's weights under the authors' key names (`ground_support.
release_state_dict`, from the official head fixture's key list), so it goes through `cgstvg.model.convert`. Its
scores must be those of the pipeline's own `evaluate` stage on the same weights saved in our layout.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
import yaml

from cgstvg.cli import main
from cgstvg.inference.checkpoint import GroundingParams, save_grounding_checkpoint
from cgstvg.model.cgstvg import build_cgstvg
from ground_support import make_tokenizer, release_state_dict
from pipeline_support import run_stage, tiny_params, write_params

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def _params() -> dict:
    """The tiny pipeline's params, with a head of the fixture's layer counts (2 encoder, 3 decoder layers) so that
    the official key names cover it, evaluated with the release's protocols."""
    params = tiny_params(evaluate={"protocol": "two_pass", "metric_protocol": "release", "renders": 0})
    params["model"].update(enc_layers=2, dec_layers=3)
    return params


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, fixtures_dir):
    d = tmp_path_factory.mktemp("zoo")
    params = _params()
    params_file = write_params(d, params)
    for stage in ("synthesize", "normalize", "shard"):
        run_stage(stage, d, params_file)
    tokenizer = make_tokenizer(d / "tokenizer")
    torch.manual_seed(0)
    ours = build_cgstvg(params["model"], tokenizer).state_dict()
    release = release_state_dict(ours, fixtures_dir / "head")
    checkpoint = d / "hcstvg.pth"
    # The release's file: model, its EMA (the one evaluated) and the optimizer state.
    zeros = {k: torch.zeros_like(v) for k, v in release.items()}
    torch.save({"model": zeros, "model_ema": release, "optimizer": {"state": {}}, "iteration": 7}, checkpoint)
    return {
        "dir": d,
        "params": params,
        "params_file": params_file,
        "tokenizer": tokenizer,
        "ours": ours,
        "ckpt": checkpoint,
    }


def _args(zoo, **changes) -> list[str]:
    d = zoo["dir"]
    options = {
        "--checkpoint": zoo["ckpt"],
        "--params": zoo["params_file"],
        "--tokenizer": zoo["tokenizer"],
        "--normalized": d / "out" / "normalize",
        "--shards": d / "out" / "shard",
        "--out": d / "zoo",
        "--device": "cpu",
        "--batch-size": 2,
        **{f"--{k.replace('_', '-')}": v for k, v in changes.items()},
    }
    return ["evaluate", *(str(x) for kv in options.items() for x in kv)]


def test_release_checkpoint_scores_as_the_evaluate_stage(zoo, capsys):
    d = zoo["dir"]
    assert main(_args(zoo, features=d / "out" / "extract")) == 0
    printed = capsys.readouterr().out
    assert "m_vIoU" in printed and str(zoo["ckpt"]) in printed
    headline = json.loads((d / "zoo" / "metrics.json").read_text())
    run = json.loads((d / "zoo" / "run.json").read_text())
    assert run["checkpoint"]["layout"] == "release" and run["protocol"] == "two_pass"
    assert (run["dataset"], run["split"], run["scored"]) == ("hcstvg_v1", "test", 4)
    assert headline["model"]["n"] == 4 and set(headline["model"]) == {"m_tIoU", "m_vIoU", "vIoU@0.3", "vIoU@0.5", "n"}

    # The same weights in our layout, scored by the pipeline's stage on the motion features evaluate kept.
    params = zoo["params"]
    grounding = GroundingParams.from_params_yaml(params, "hcstvg_v1", "two_pass")
    save_grounding_checkpoint(d / "out" / "train" / "model.pt", zoo["ours"], grounding, zoo["tokenizer"])
    run_stage("evaluate", d, zoo["params_file"])
    stage = json.loads((d / "out" / "evaluate" / "metrics.json").read_text())
    assert headline == stage
    detail = json.loads((d / "zoo" / "metrics_detail.json").read_text())
    stage_detail = json.loads((d / "out" / "evaluate" / "metrics_detail.json").read_text())
    assert detail["model"] == stage_detail["model"] and detail["baselines"] == stage_detail["baselines"]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("cgstvg evaluate: error: "), err
    return err


def test_missing_checkpoint_tokenizer_and_unsharded_split_are_one_line_errors(zoo, tmp_path, capsys):
    cases = [
        ({"checkpoint": tmp_path / "hcstvg.pth"}, "hcstvg.pth: checkpoint not found"),
        ({"tokenizer": tmp_path / "roberta-base"}, "roberta-base: tokenizer directory not found"),
        ({"tokenizer": tmp_path}, "not a tokenizer directory"),
        ({"shards": tmp_path / "shard"}, "the split hcstvg_v1/test is not sharded"),
        ({"normalized": tmp_path / "normalize"}, "no normalized table for hcstvg_v1/test"),
        ({"split": "val"}, "no normalized table for hcstvg_v1/val"),
    ]
    for change, expected in cases:
        assert main(_args(zoo, out=tmp_path / "out", **change)) == 1
        err = _one_line_error(capsys)
        assert expected in err, (change, err)
    assert not (tmp_path / "out").exists()


def test_checkpoints_of_a_wrong_layout_are_one_line_errors(zoo, tmp_path, capsys):
    state = torch.load(zoo["ckpt"], weights_only=True)["model_ema"]
    no_weights, not_release, short = tmp_path / "a.pth", tmp_path / "b.pth", tmp_path / "c.pth"
    torch.save({"iteration": 7, "optimizer": {}}, no_weights)
    torch.save({"model": {"backbone.weight": torch.zeros(2)}}, not_release)
    torch.save({"model_ema": {k: v for k, v in state.items() if not k.startswith("ground_encoder.")}}, short)
    cases = [(no_weights, "no state dict found"), (not_release, "do not match"), (short, "weights missing")]
    for path, expected in cases:
        assert main(_args(zoo, checkpoint=path, out=tmp_path / "out")) == 1
        err = _one_line_error(capsys)
        assert str(path) in err and expected in err, err


def test_params_with_an_unknown_key_are_refused_naming_file_and_key(zoo, tmp_path, capsys):
    params = copy.deepcopy(zoo["params"])
    params["evaluate"]["protocl"] = "two_pass"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    assert main(_args(zoo, params=path, out=tmp_path / "out")) == 1
    err = _one_line_error(capsys)
    assert f"{path}:evaluate: unknown key 'protocl' (did you mean 'protocol'?)" in err
