"""Prefect tasks that run DVC commands in the repository, streaming their output into the Prefect run logger.

DVC stays the source of truth: every stage runs through `dvc repro` (or is recorded with `dvc commit` after a
fan-out), so dvc.lock, the cache, `dvc metrics diff` and `dvc exp show` work exactly as from the shell.
Commands run as subprocesses with `cwd` set to the repository root, so flows work from any working directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from prefect import get_run_logger, task
from prefect.logging import get_logger
from prefect.tasks import exponential_backoff

# Output lines kept for the error message of a failed command (the whole output is in the run log).
_TAIL_LINES = 40

# Markers of failures that a retry can cure: I/O on network file systems and object stores, dropped connections,
# NCCL/rendezvous timeouts. A Python error in the stage itself (ValueError, KeyError, a shape mismatch) is
# deterministic and fails at once instead of burning the retries.
_TRANSIENT_MARKERS = (
    "OSError",
    "IOError",
    "Input/output error",
    "Stale file handle",
    "Resource temporarily unavailable",
    "ConnectionError",
    "ConnectionResetError",
    "TimeoutError",
    "timed out",
    "NCCL error",
    "DistNetworkError",
    "RendezvousTimeoutError",
)
# Exit statuses of a process killed from outside (OOM killer, pre-emption, node drain): worth one more try.
_KILLED_STATUSES = {-signal.SIGKILL, -signal.SIGTERM, 128 + signal.SIGKILL, 128 + signal.SIGTERM}


class DvcCommandError(RuntimeError):
    """A command exited non-zero; `tail` holds its last output lines for the error message and retry decision."""

    def __init__(self, cmd: Sequence[str], returncode: int, tail: str) -> None:
        self.cmd = list(cmd)
        self.returncode = returncode
        self.tail = tail
        super().__init__(f"`{' '.join(self.cmd)}` exited with status {returncode}; last output:\n{tail}")

    @property
    def transient(self) -> bool:
        return self.returncode in _KILLED_STATUSES or any(m in self.tail for m in _TRANSIENT_MARKERS)


def _logger():
    """The Prefect run logger inside a flow or task run; a plain Prefect logger when called outside one."""
    try:
        return get_run_logger()
    except Exception:  # MissingContextError: called from a plain script or a test helper
        return get_logger("cgstvg.flows")


def dvc_executable() -> str:
    """The `dvc` next to this interpreter (a virtual environment need not be on PATH), else the one on PATH."""
    beside = Path(sys.executable).with_name("dvc")
    if beside.exists():
        return str(beside)
    found = shutil.which("dvc")
    if found is None:
        raise FileNotFoundError(f"no `dvc` executable beside {sys.executable} or on PATH")
    return found


def run_streaming(cmd: Sequence[str], repo: str | os.PathLike, *, env: dict[str, str] | None = None) -> str:
    """Run `cmd` in `repo`, logging each output line (stdout and stderr merged) as it arrives; return the output.

    Raises `DvcCommandError` on a non-zero exit.
    """
    log = _logger()
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    log.info("$ %s", " ".join(cmd))
    lines: list[str] = []
    tail: deque[str] = deque(maxlen=_TAIL_LINES)
    with subprocess.Popen(
        list(cmd),
        cwd=repo,
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        bufsize=1,
    ) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            lines.append(line)
            tail.append(line)
            if line.strip():  # DVC prints spacer lines; they would be empty log records
                log.info(line)
        returncode = proc.wait()
    if returncode != 0:
        raise DvcCommandError(cmd, returncode, "\n".join(tail))
    return "\n".join(lines)


def dvc(args: Sequence[str], repo: str | os.PathLike, *, env: dict[str, str] | None = None) -> str:
    """Run `dvc <args>` in `repo` with streamed output."""
    return run_streaming([dvc_executable(), *args], repo, env=env)


def dvc_json(args: Sequence[str], repo: str | os.PathLike) -> Any:
    """Run a read-only `dvc ... --json` command quietly and parse its output (nothing is logged line by line)."""
    cmd = [dvc_executable(), *args, "--json"]
    proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise DvcCommandError(cmd, proc.returncode, proc.stderr.strip() or proc.stdout.strip())
    return json.loads(proc.stdout) if proc.stdout.strip() else {}


def pipeline_stages(repo: str | os.PathLike) -> list[str]:
    """Stage names of `dvc.yaml` in the order they are written there (the pipeline order)."""
    path = Path(repo) / "dvc.yaml"
    try:
        stages = (yaml.safe_load(path.read_text()) or {}).get("stages") or {}
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{path}: no dvc.yaml; is {repo} the repository root?") from exc
    return list(stages)


def stage_metrics_files(repo: str | os.PathLike) -> dict[str, str]:
    """{metrics file: the stage that writes it} for the `metrics:` entries of the stages in `dvc.yaml`."""
    stages = (yaml.safe_load((Path(repo) / "dvc.yaml").read_text()) or {}).get("stages") or {}
    return {
        path: name
        for name, stage in stages.items()
        for entry in (stage or {}).get("metrics") or []
        for path in ([entry] if isinstance(entry, str) else entry)
    }


# OSErrors that no retry cures: the input is missing or the path is wrong.
_PERMANENT_OS_ERRORS = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError)


def is_transient(exc: BaseException) -> bool:
    """A failed command whose output looks transient, or an I/O, connection or timeout error raised in-process."""
    if isinstance(exc, DvcCommandError):
        return exc.transient
    return isinstance(exc, (OSError, TimeoutError)) and not isinstance(exc, _PERMANENT_OS_ERRORS)


def retry_if_transient(task_, task_run, state) -> bool:
    """`retry_condition_fn`: retry only failures that `is_transient` accepts; deterministic errors fail at once."""
    exc = state.result(raise_on_failure=False)
    return isinstance(exc, BaseException) and is_transient(exc)


def with_retries(task_obj, retries: int, backoff_s: float):
    """`task_obj` with `retries` retries on transient failures, waiting backoff_s, 2*backoff_s, 4*backoff_s, ..."""
    if retries <= 0:
        return task_obj.with_options(retries=0)
    return task_obj.with_options(
        retries=retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=backoff_s)(retries),
        retry_condition_fn=retry_if_transient,
    )


@task(task_run_name="dvc repro {stage}")
def repro_stage(stage: str, repo: str, force: bool = False) -> str:
    """`dvc repro <stage>`: runs the stage (and any upstream stage whose inputs changed); a no-op when cached."""
    return dvc(["repro", *(["--force"] if force else []), stage], repo)


@task(task_run_name="dvc status {stage}")
def stage_changed(stage: str, repo: str) -> bool:
    """True when `dvc status` reports the stage (or anything it depends on) out of date."""
    status = dvc_json(["status", stage], repo)
    return bool(status)


@task(task_run_name="dvc commit {stage}")
def commit_stage(stage: str, repo: str) -> str:
    """`dvc commit --force <stage>`: record outputs produced outside `dvc repro` (a fan-out) in dvc.lock and the
    cache."""
    return dvc(["commit", "--force", stage], repo)


class OverrideError(ValueError):
    """A `--set` override that names no key of its params file, does not parse, or gives a value the params
    schema refuses; the message is one line naming the override and the key."""


def _dotted_keys(tree: Any, prefix: str = "") -> list[str]:
    if not isinstance(tree, dict):
        return []
    out = []
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        out += [name, *_dotted_keys(value, name)]
    return out


def _no_such_key(item: str, key: str, path: Path, keys: list[str]) -> OverrideError:
    section, _, _ = key.partition(".")
    leaf = key.rsplit(".", 1)[-1]
    near = sorted((k for k in keys if k.rsplit(".", 1)[-1] == leaf and k.partition(".")[0] == section), key=len)[:3]
    hint = f"; did you mean {' or '.join(near)}?" if near else ""
    return OverrideError(f"--set {item}: {path} has no key {key!r}{hint}")


def check_param_overrides(overrides: Sequence[str], repo: str | os.PathLike) -> None:
    """Check `dvc exp run -S` style overrides without writing anything: each plain `key=value` must name a key
    that exists (`+key=value` adds one), DVC's override parser must accept it, and params.yaml with the overrides
    applied must pass `load_params` (the schema of cgstvg.utils.params_schema). Raises a one-line
    `OverrideError`."""
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import apply_overrides

    from cgstvg.utils.params import load_params
    from cgstvg.utils.params_schema import ParamsError

    for path, items in to_path_overrides(list(overrides)).items():
        target = Path(repo) / path
        if not target.exists():
            raise OverrideError(f"--set {' '.join(items)}: no params file {target}")
        keys = _dotted_keys(yaml.safe_load(target.read_text()) or {})
        for item in items:
            key = item.split("=", 1)[0]
            if "=" not in item and not item.startswith("~"):
                raise OverrideError(f"--set {item}: expected KEY=VALUE (a dotted key of {target.name})")
            if "=" in item and not key.startswith("+") and key.lstrip("~") not in keys:
                raise _no_such_key(item, key.lstrip("~"), target, keys)
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / target.name
            shutil.copyfile(target, copy)
            try:
                apply_overrides(copy, items)
            except InvalidArgumentError as err:
                cause = err.__cause__ or err.__context__ or err
                first = str(cause).strip().splitlines()[0] if str(cause).strip() else str(err)
                raise OverrideError(f"--set {' '.join(items)}: {first}") from None
            if target.name == "params.yaml":  # the pipeline's params file; other files have no schema
                try:
                    load_params(copy)
                except ParamsError as err:
                    problems = str(err).replace(str(copy), str(target))
                    raise OverrideError(f"--set {' '.join(items)}: {problems}") from None


@task(task_run_name="apply params overrides")
def apply_param_overrides(overrides: list[str], repo: str) -> list[str]:
    """Apply `dvc exp run -S` style overrides (`section.key=value`, `file.yaml:key=value`) to the params files.

    DVC's own override code does the editing, so the syntax and the YAML written match `dvc exp run -S` exactly.
    The overrides are checked first (`check_param_overrides`), so a bad one leaves every file as it was.
    """
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import apply_overrides

    check_param_overrides(overrides, repo)
    for path, items in to_path_overrides(overrides).items():
        target = Path(repo) / path
        apply_overrides(target, items)
        _logger().info("%s: applied %s", target, items)
    return overrides


def _drop_experiments(names: list[str], repo: str) -> None:
    """Remove earlier experiments with these names, so a rerun replaces them instead of failing on the name."""
    listed = subprocess.run(
        [dvc_executable(), "exp", "list", "--name-only"],
        cwd=repo,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    ).stdout.split()
    existing = [n for n in names if n in listed]
    if existing:
        dvc(["exp", "remove", *existing], repo)


@task(task_run_name="dvc exp run {name} (record)")
def exp_record(name: str | None, stages: list[str], repo: str) -> str:
    """Record the workspace as a DVC experiment: `dvc exp run -n <name> <stages>` after the stages ran.

    The stages are up to date by then, so DVC runs nothing and commits params, dvc.lock and metrics as an
    experiment ref. (`dvc exp save` would need every output of dvc.yaml present, even of stages not run.)
    """
    if name:
        _drop_experiments([name], repo)
    return dvc(["exp", "run", *(["--name", name] if name else []), *stages], repo)


@task(task_run_name="dvc exp run {name}")
def exp_run(name: str, overrides: list[str], repo: str, targets: list[str] | None = None) -> str:
    """`dvc exp run --temp -n <name> -S ...`: one experiment in a temporary copy, leaving the workspace untouched.

    Stages whose inputs did not change come from the DVC cache, so variants share the data stages.
    """
    _drop_experiments([name], repo)
    # No --force: it would also rerun every cached stage.
    args = ["exp", "run", "--temp", "--name", name]
    for item in overrides:
        args += ["--set-param", item]
    return dvc([*args, *(targets or [])], repo)


@task(task_run_name="dvc metrics diff {baseline}")
def metrics_diff(baseline: str, repo: str) -> dict[str, dict[str, dict[str, Any]]]:
    """`dvc metrics diff --all --json <baseline>`: {metrics file: {metric: {old, new, diff}}}, the workspace against
    the baseline, unchanged scores included; dvc.yaml declares only the headline scores as metrics."""
    return dvc_json(["metrics", "diff", "--all", baseline], repo)


@task(task_run_name="dvc metrics show")
def metrics_show(repo: str) -> dict[str, Any]:
    """`dvc metrics show --json`: the workspace metrics, {rev: {data: {file: {data: {...}}}}}."""
    return dvc_json(["metrics", "show"], repo)


@task(task_run_name="dvc exp show")
def exp_show(repo: str) -> list[dict[str, Any]]:
    """`dvc exp show --json`: the baseline commit(s) and their experiments with params and metrics."""
    return dvc_json(["exp", "show", "--no-fetch"], repo)


@task(task_run_name="dvc pull", retries=2, retry_delay_seconds=[10, 30], retry_condition_fn=retry_if_transient)
def pull(repo: str) -> str:
    """`dvc pull --allow-missing`: fetch cached inputs and outputs from the DVC remote (a fresh pod has none)."""
    return dvc(["pull", "--allow-missing"], repo)


@task(task_run_name="dvc push", retries=2, retry_delay_seconds=[10, 30], retry_condition_fn=retry_if_transient)
def push(repo: str) -> str:
    """`dvc push`: upload this run's outputs to the DVC remote, from where `dvc pull` brings them back."""
    return dvc(["push"], repo)


@task(
    task_run_name="dvc exp push {git_remote} {name}",
    retries=2,
    retry_delay_seconds=[10, 30],
    retry_condition_fn=retry_if_transient,
)
def exp_push(git_remote: str, name: str, repo: str) -> str:
    """`dvc exp push <git remote> <name>`: the experiment's git ref plus its DVC outputs; `dvc exp pull` fetches it."""
    return dvc(["exp", "push", git_remote, name], repo)
