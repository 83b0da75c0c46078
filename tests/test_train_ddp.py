"""DDP on the CPU (gloo): a 2-process `torchrun` training run, and its evaluation under 2 processes equal to 1."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import torch

from cgstvg.engine.checkpoint import list_checkpoints
from pipeline_support import prepare_shards, run_command, stage_command, tiny_params


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("ddp")
    validation = {"every": 3, "split": "test", "samples": 4}  # both test shards: one per rank
    prepare_shards(
        d, tiny_params(train={"epochs": 2, "validation": validation}, evaluate={"protocol": "two_pass", "renders": 1})
    )
    return d


def test_two_process_training_and_evaluation_match_one_process(workdir):
    params = workdir / "params.yaml"
    out = workdir / "out"
    run_command(stage_command("train", params, out, nproc=2, port=29641), workdir)
    summary = json.loads((out / "train" / "summary.json").read_text())
    # 12 samples / (2 ranks x batch 2) = 3 steps per epoch on each rank
    assert summary["world_size"] == 2 and summary["steps"] == 6 and summary["steps_per_epoch"] == 3
    assert [s for s, _ in list_checkpoints(out / "train" / "checkpoints")] == [4, 6]
    rows = (out / "train" / "live" / "plots" / "metrics" / "train" / "loss" / "total.tsv").read_text().splitlines()
    assert len(rows) == 1 + 6  # one header, one row per step: written once (rank 0), not once per rank
    # the validation ran on both ranks (each scores its shard) and was logged once
    val = (out / "train" / "live" / "plots" / "metrics" / "val" / "m_vIoU.tsv").read_text().splitlines()
    assert [r.split("\t")[0] for r in val] == ["step", "3", "6"]

    run_command(stage_command("evaluate", params, out, nproc=2, port=29642, result=workdir / "eval2"), workdir)
    run_command(stage_command("evaluate", params, out, result=workdir / "eval1"), workdir)
    two = json.loads((workdir / "eval2" / "metrics.json").read_text())
    one = json.loads((workdir / "eval1" / "metrics.json").read_text())
    assert two == one and one["model"]["n"] == 4.0
    assert pq.read_table(workdir / "eval2" / "predictions.parquet").equals(
        pq.read_table(workdir / "eval1" / "predictions.parquet")
    )
    assert len(list((workdir / "eval2" / "renders").glob("*.gif"))) == 1
