"""A tiny configuration of the whole pipeline, and helpers that run its stage modules in a temporary folder.

The tiny data: 12 training and 4 test HC-STVG-v1 clips of 16 frames at 48 x 64 (a few seconds to synthesize and
shard); the tiny model: d = 16, one encoder and two decoder layers, a 3-block CNN and a 2-stage Swin, both stride 8.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

TINY_PARAMS = yaml.safe_load(open(REPO / "params.yaml"))
TINY_PARAMS["synthesize"].update(frames=16, height=48, width=64, clips={"hcstvg_v1": {"train": 12, "test": 4}})
TINY_PARAMS["normalize"].update(raw_root="out/synthesize", datasets=["hcstvg_v1"])
TINY_PARAMS["shard"].update(workers=0)
TINY_PARAMS["shard"]["resize"].update(short_side=48, max_long_side=64)
TINY_PARAMS["shard"]["shards"].update(min_shards=2)
TINY_PARAMS["shard"]["loader"].update(shuffle_buffer=8)
TINY_PARAMS["model"]["init"] = {"grounding": None, "motion": None}  # random: the shipped pretraining fits the default
TINY_PARAMS["model"].update(
    d_model=16, heads=2, ffn_dim=32, enc_layers=1, dec_layers=2, context_heads=2, context_ffn_dim=32, max_video_len=40
)
TINY_PARAMS["model"]["backbones"].update(
    appearance={"name": "small_cnn", "channels": [8, 16, 16], "frame_chunk": 0},
    motion={
        "embed_dim": 8,
        "depths": [1, 1],
        "num_heads": [1, 2],
        "patch_size": [1, 4, 4],
        "window_size": [2, 4, 4],
        "stochastic_depth_prob": 0.0,
        "drop_path_in_train": False,
        "attention": "sdpa",
        "attention_chunk": 512,
    },
)
TINY_PARAMS["model"]["backbones"]["text"].update(
    tokenizer_vocab_size=300, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, max_positions=34
)
TINY_PARAMS["extract"].update(batch_frames=32, device="cpu", threads=1)
TINY_PARAMS["train"].update(
    epochs=2, batch_size=2, threads=1, device="cpu", checkpoint_every=2, log_every=1, keep_checkpoints=2
)
TINY_PARAMS["train"]["schedule"].update(milestones_epochs=[1])
TINY_PARAMS["evaluate"].update(batch_size=2, threads=1, device="cpu", renders=2)


def tiny_params(**sections) -> dict:
    """A deep copy of the tiny params with `section={key: value}` updates."""
    params = copy.deepcopy(TINY_PARAMS)
    for name, values in sections.items():
        params[name].update(values)
    return params


def write_params(directory: Path, params: dict) -> Path:
    path = directory / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def stage_args(stage: str, out: Path) -> list[str]:
    """The command-line arguments of a stage module, with dvc.yaml's layout under `out`."""
    return {
        "synthesize": ["--out", f"{out}/synthesize", "--no-progress"],
        "normalize": ["--raw", f"{out}/synthesize", "--out", f"{out}/normalize"],
        "shard": ["--normalized", f"{out}/normalize", "--raw", f"{out}/synthesize", "--out", f"{out}/shard"],
        "extract": ["--shards", f"{out}/shard", "--out", f"{out}/extract", "--normalized", f"{out}/normalize"],
        "train": [
            "--shards",
            f"{out}/shard",
            "--features",
            f"{out}/extract",
            "--out",
            f"{out}/train",
            "--normalized",
            f"{out}/normalize",
        ],
        "evaluate": [
            "--normalized",
            f"{out}/normalize",
            "--shards",
            f"{out}/shard",
            "--features",
            f"{out}/extract",
            "--model",
            f"{out}/train/model.pt",
            "--out",
            f"{out}/evaluate",
        ],
    }[stage]


def run_stage(stage: str, workdir: Path, params: Path, out: str = "out") -> dict | None:
    """Run a stage module's `main` in this process (cwd = workdir)."""
    import importlib

    module = importlib.import_module(f"pipeline.{stage}")
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        return module.main([*stage_args(stage, Path(out)), "--params", str(params)])
    finally:
        os.chdir(cwd)


def stage_command(
    stage: str, params: Path, out: Path, nproc: int = 1, port: int = 29631, result: Path | None = None
) -> list[str]:
    """The command line of a stage in a fresh process; under torchrun with `nproc` > 1 (gloo on CPU).

    `result`: the stage's own output folder (`--out`) instead of `<out>/<stage>`."""
    if nproc > 1:
        head = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={nproc}",
            f"--master_port={port}",
            "-m",
            f"pipeline.{stage}",
        ]
    else:
        head = [sys.executable, "-m", f"pipeline.{stage}"]
    args = stage_args(stage, out)
    if result is not None:
        args[args.index("--out") + 1] = str(result)
    return [*head, *args, "--params", str(params)]


def run_command(cmd: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def prepare_shards(workdir: Path, params: dict) -> Path:
    """synthesize + normalize + shard + extract of the tiny data in `workdir`; returns the params file."""
    path = write_params(workdir, params)
    for stage in ("synthesize", "normalize", "shard", "extract"):
        run_stage(stage, workdir, path)
    return path
