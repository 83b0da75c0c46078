"""`train` killed mid-run resumes from its checkpoint: same step count, the DVCLive curves (losses, learning rates,
the held-out validation) continue without a step twice or missing, and the checkpoints and `model.pt` it writes are
byte for byte the uninterrupted run's. The validation changes no weight: `model.pt` is the same bytes without it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import pytest
import torch
import yaml

from cgstvg.engine.checkpoint import list_checkpoints
from cgstvg.inference.checkpoint import load_grounding_model
from pipeline_support import REPO, prepare_shards, run_command, stage_command, tiny_params

VALIDATION = {"every": 4, "split": "test", "samples": 2}  # 18 steps: validated at 4, 8, 12, 16 on one test shard


def live_files(result) -> dict[str, str]:
    """Every file of a `train` output's DVCLive folder, by relative path."""
    live = result / "live"
    return {str(p.relative_to(live)): p.read_text() for p in sorted(live.rglob("*")) if p.is_file()}


def training_files(result) -> dict[str, bytes]:
    """The checkpoints (with their sidecars) and model.pt of a `train` output folder, by name."""
    files = sorted((result / "checkpoints").glob("step_*")) + [result / "model.pt"]
    return {p.name: p.read_bytes() for p in files}


def differing_training_files(a, b) -> list[str]:
    """The names whose bytes differ between two `train` output folders (a name in one only counts too)."""
    one, other = training_files(a), training_files(b)
    return sorted(name for name in one.keys() | other.keys() if one.get(name) != other.get(name))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("resume")
    # 12 samples / batch 2 = 6 steps per epoch, 18 in all
    prepare_shards(d, tiny_params(train={"epochs": 3, "validation": VALIDATION}))
    return d


def _command(workdir, result, params="params.yaml"):
    return stage_command("train", workdir / params, workdir / "out", result=workdir / result / "train")


def _train(workdir, result, params="params.yaml"):
    return run_command(_command(workdir, result, params), workdir)


def test_killed_training_resumes_from_its_checkpoint(workdir):
    _train(workdir, "whole")
    whole = json.loads((workdir / "whole" / "train" / "summary.json").read_text())
    assert whole["steps"] == 18 and whole["resumed_from"] == 0

    cmd = _command(workdir, "cut")
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = workdir / "cut" / "train" / "checkpoints"
    deadline = time.monotonic() + 240
    try:
        while not any(step >= 6 for step, _ in list_checkpoints(checkpoints)):
            assert proc.poll() is None, "training ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint after 240 s"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    saved = max(step for step, _ in list_checkpoints(checkpoints))
    assert 6 <= saved < 18 and not (workdir / "cut" / "train" / "model.pt").exists()

    _train(workdir, "cut")
    resumed = json.loads((workdir / "cut" / "train" / "summary.json").read_text())
    assert resumed["resumed_from"] >= saved and resumed["steps"] == 18
    assert resumed["steps_run"] == 18 - resumed["resumed_from"]
    # the curves of the resumed run are the uninterrupted run's, row for row
    whole_live = live_files(workdir / "whole" / "train")
    assert live_files(workdir / "cut" / "train") == whole_live
    assert [r.split("\t")[0] for r in whole_live["plots/metrics/val/m_vIoU.tsv"].splitlines()] == [
        "step",
        *map(str, (4, 8, 12, 16)),
    ]
    assert [r.split("\t")[0] for r in whole_live["plots/metrics/train/loss/total.tsv"].splitlines()[1:]] == [
        str(i) for i in range(1, 19)
    ]
    assert set(json.loads(whole_live["metrics.json"])) == {"step", "val"}
    # the bytes too: the checkpoints written after the resume pickle reloaded optimizer state (issue 16)
    assert differing_training_files(workdir / "whole" / "train", workdir / "cut" / "train") == []
    a = load_grounding_model(workdir / "whole" / "train" / "model.pt").model.state_dict()
    b = load_grounding_model(workdir / "cut" / "train" / "model.pt").model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)


def test_rerun_of_a_finished_training_rewrites_its_curves(workdir):
    # `dvc repro` deletes a stage's outputs but keeps the persisted checkpoints: a rerun resumes at the last step,
    # runs nothing, and must still write the loss curves, the model and the summary.
    _train(workdir, "whole")
    expected = live_files(workdir / "whole" / "train")
    shutil.rmtree(workdir / "whole" / "train" / "live")
    (workdir / "whole" / "train" / "model.pt").unlink()
    _train(workdir, "whole")
    summary = json.loads((workdir / "whole" / "train" / "summary.json").read_text())
    assert summary["resumed_from"] == 18 and summary["steps_run"] == 0
    assert live_files(workdir / "whole" / "train") == expected
    assert (workdir / "whole" / "train" / "model.pt").is_file()


def test_validation_leaves_the_trained_model_byte_identical(workdir):
    _train(workdir, "whole")  # validated at 4, 8, 12 and 16 (now, or by the test before, which this resumes)
    assert (workdir / "whole" / "train" / "live" / "plots" / "metrics" / "val" / "m_tIoU.tsv").is_file()
    params = tiny_params(train={"epochs": 3, "validation": {**VALIDATION, "every": 0}})
    # the key order of params.yaml's: model.pt records the model params as read
    (workdir / "no_validation.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _train(workdir, "plain", "no_validation.yaml")
    plain = workdir / "plain" / "train"
    assert json.loads((plain / "summary.json").read_text())["validation_seconds"] == 0.0
    assert not (plain / "live" / "plots" / "metrics" / "val").exists()
    assert (plain / "model.pt").read_bytes() == (workdir / "whole" / "train" / "model.pt").read_bytes()


def test_changed_params_do_not_resume_stale_checkpoints(workdir):
    params = tiny_params(train={"epochs": 1})
    (workdir / "changed.yaml").write_text(yaml.safe_dump(params))
    _train(workdir, "whole", "changed.yaml")
    summary = json.loads((workdir / "whole" / "train" / "summary.json").read_text())
    assert summary["resumed_from"] == 0 and summary["steps"] == 6
