"""Outputs that cannot be written (a full disk, a size limit, a directory in the way) end in one line naming the
file, and leave no partial file behind; the audit saw `enforce fail at inline_container.cc:672` instead."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from cgstvg.utils.atomic import WriteError, write_json
from pipeline import run_stage

REPO = Path(__file__).resolve().parents[1]

# A process whose files may not grow past 1 MiB (RLIMIT_FSIZE; SIGXFSZ ignored so writes fail with EFBIG): what a
# full disk looks like to the writer, without filling one.
LIMITED = f"""
import resource, signal, sys
sys.path.insert(0, {str(REPO)!r})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
import torch
from pipeline import run_stage
"""


def _limited(body: str) -> subprocess.CompletedProcess:
    code = LIMITED + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_a_checkpoint_that_does_not_fit_is_one_line_and_leaves_the_older_one(tmp_path):
    from cgstvg.engine.checkpoint import list_checkpoints, save_checkpoint

    save_checkpoint(tmp_path, {"step": 1, "w": torch.zeros(8)})
    before = sorted(p.name for p in tmp_path.iterdir())
    result = _limited(
        f"""
        from cgstvg.engine.checkpoint import save_checkpoint
        def main():
            save_checkpoint({str(tmp_path)!r}, {{"step": 2, "w": torch.zeros(1 << 20)}})
        run_stage("train", main)
        """
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"train: {tmp_path}/step_00000002.pt: cannot be written: the write failed part way")
    assert "MiB free there" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no partial file, the older checkpoint kept
    assert [step for step, _ in list_checkpoints(tmp_path)] == [1]


def test_a_json_that_does_not_fit_names_the_reason(tmp_path):
    result = _limited(
        f"""
        from cgstvg.utils.atomic import write_json
        run_stage("evaluate", lambda: write_json({str(tmp_path / "metrics.json")!r}, {{"x": "y" * (2 << 20)}}))
        """
    )
    assert result.returncode == 1
    line = result.stderr.strip()
    assert line.startswith(f"evaluate: {tmp_path}/metrics.json: cannot be written: File too large (") and line.endswith(
        "MiB free there)"
    )
    assert not list(tmp_path.iterdir())


def test_a_directory_where_the_output_goes(tmp_path):
    (tmp_path / "out.json").mkdir()
    with pytest.raises(WriteError, match=r"out\.json: cannot be written: it is a directory"):
        write_json(tmp_path / "out.json", {"a": 1})
    with pytest.raises(SystemExit, match=r"^evaluate: .*out\.json: cannot be written: it is a directory$"):
        run_stage("evaluate", lambda: write_json(tmp_path / "out.json", {"a": 1}))
    (tmp_path / "file").write_text("")
    with pytest.raises(WriteError, match=r"file/x\.json: cannot be written: .*/file is a file, not a directory"):
        write_json(tmp_path / "file" / "x.json", {"a": 1})
