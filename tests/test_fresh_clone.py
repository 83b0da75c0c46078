"""A fresh clone looks healthy: `dvc status` of `data.dvc` (the real downloads' folder) is clean before any run.

As first shipped, `data.dvc` tracked an empty folder in DVC's cache, which a clone does not have, so a newcomer's
first `dvc status` printed `data.dvc: changed outs: not in cache: data`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_data_dvc_is_clean_in_a_fresh_clone(tmp_path: Path) -> None:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout: there is nothing to clone")
    committed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "--error-unmatch", "data/README.md", "data.dvc"],
        capture_output=True,
        text=True,
    )
    assert committed.returncode == 0, "data/README.md and data.dvc must be committed: " + committed.stderr
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    dvc = [sys.executable, "-m", "dvc"]
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    out = subprocess.run([*dvc, "status", "data.dvc"], cwd=clone, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "up to date" in out.stdout, out.stdout
