"""Throwaway git+DVC repositories for the flow tests: a copy of this checkout with tiny params, or a toy repo."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).with_name("dvc"))
GIT_ID = ["-c", "user.name=cgstvg-test", "-c", "user.email=cgstvg-test@localhost"]

# Two pairs per split: enough for every stage to see every dataset and split, and quick to synthesize.
TINY_CLIPS = [
    f"synthesize.clips.{dataset}.{split}=2"
    for dataset, splits in {
        "hcstvg_v1": ("train", "test"),
        "hcstvg_v2": ("train", "val"),
        "vidstg": ("train", "val", "test"),
    }.items()
    for split in splits
]

# A metrics stage for the tests: pairs per normalized table, in a git-tracked metrics file, so that
# `dvc metrics diff HEAD` has a baseline once the test commits it.
PAIRS_STAGE = {
    "cmd": (
        'python -c "import glob, json, os, pyarrow.parquet as pq; '
        "os.makedirs('metrics', exist_ok=True); "
        "n = sum(pq.read_metadata(p).num_rows for p in glob.glob('outputs/normalize/*/*.parquet')); "
        "json.dump({'pairs': n}, open('metrics/pairs.json', 'w'))\""
    ),
    "deps": ["outputs/normalize"],
    "metrics": [{"metrics/pairs.json": {"cache": False}}],
}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *GIT_ID, *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def git_commit_all(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


def copy_checkout(dest: Path) -> Path:
    """Copy the tracked and untracked-but-not-ignored files of this checkout into a fresh git repo at `dest`,
    with TINY_CLIPS applied and the `pairs` metrics stage added; one commit."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for rel in filter(None, listed.split("\0")):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    from dvc.utils.hydra import apply_overrides

    # `data/` (data.dvc, the raw-data pointer) is git-ignored; `dvc pull` makes it in a fresh clone, and
    # `dvc exp save` needs every tracked output present.
    (dest / "data").mkdir(exist_ok=True)
    apply_overrides(dest / "params.yaml", TINY_CLIPS)
    dvc_yaml = yaml.safe_load((dest / "dvc.yaml").read_text())
    dvc_yaml["stages"]["pairs"] = PAIRS_STAGE
    (dest / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))
    git(dest, "init", "-q")
    git_commit_all(dest, "copy of the checkout with tiny params")
    return dest


def toy_repo(dest: Path, files: dict[str, str], stages: dict, params: dict) -> Path:
    """A git+DVC repo with the given files, dvc.yaml stages and params.yaml; one commit."""
    dest.mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_text(text)
    (dest / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(dest, "init", "-q")
    subprocess.run([DVC, "init", "-q"], cwd=dest, check=True)
    git_commit_all(dest, "toy repo")
    return dest
