"""Fan-out: a stage's per-item work (one video's frames for `shard`, one shard's features for `extract`) mapped
over Prefect tasks on the task runner chosen in params.yaml, then recorded in DVC with `dvc commit`.

The library knows nothing of Prefect: it offers each mappable step as plain functions, plan / run one item /
finish (`cgstvg.data.shard_writer`: `plan_shards`, `encode_task`, `write_shards`; `cgstvg.engine.features`:
`plan_extraction`, `extract_shard`, `finish_extraction`). The stage module composes them and stays the only place
that knows what its items are. It exposes

    main(argv: list[str] | None = None, *, mapper=None)

where `mapper(fn, items)`, when given, must yield `fn(item)` for each item, in order, and `fn` is a module-level
function (process and Dask workers import it by name); the stage plans, maps its run-one function over the items
and finishes; without a mapper it runs its own way.
This module supplies a mapper that runs each chunk of items as one Prefect task and keeps at most
`2 * workers` chunks in flight, so results (JPEG bytes, feature tensors) never pile up in memory. Because the
library does the planning and the writing, a fanned-out run writes the same bytes as `dvc repro <stage>`.

Runners (`flows.task_runner`): `threads` (I/O-bound decoding, the default), `processes` (CPU-bound work on one
machine) or `dask` (prefect-dask: a LocalCluster, or the scheduler at `flows.dask_address` for a cluster whose
workers see the repository at the same path). The stage module is imported from the flow's own Python path,
so a flow drives the checkout it runs from.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import shlex
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from flows.dvc_tasks import with_retries
from flows.launch import stage_command
from flows.settings import FlowSettings


def make_task_runner(kind: str, workers: int, dask_address: str | None = None) -> TaskRunner:
    """The Prefect task runner for the fan-out: 'threads', 'processes' or 'dask'."""
    if kind == "threads":
        return ThreadPoolTaskRunner(max_workers=workers)
    if kind == "processes":
        return ProcessPoolTaskRunner(max_workers=workers)
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

        if dask_address:
            return DaskTaskRunner(address=dask_address)
        # Processes, one thread each: the stage code is CPU-bound Python/torch and sets its own thread count.
        return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True})
    raise ValueError(f"params.yaml: flows.task_runner must be 'threads', 'processes' or 'dask', got {kind!r}")


# No result persistence or cache key: chunk inputs and outputs are bulk data (records, JPEG bytes) that would only
# be hashed and stored for nothing; DVC caches the stage's output instead.
@task(task_run_name="{label} chunk {index}", persist_result=False, cache_policy=NO_CACHE)
def run_chunk(fn: Callable[[Any], Any], items: list[Any], index: int, label: str) -> list[Any]:
    """Apply `fn` to one chunk of items (module-level `fn`, so process and Dask runners can pickle it)."""
    return [fn(item) for item in items]


def _chunks(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def prefect_mapper(
    label: str, workers: int, chunk_size: int = 1, retries: int = 0, backoff_s: float = 10.0
) -> Callable[[Callable, Iterable], Iterator]:
    """An ordered `map(fn, items)` whose chunks run as Prefect tasks on the current flow's task runner.

    At most `2 * workers` chunks are submitted ahead of the one being consumed (a bounded window), so memory
    stays flat however many items there are; results come back in item order. A chunk that fails with a
    transient error (I/O, timeout) is retried `retries` times with exponential back-off.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    chunk_task = with_retries(run_chunk, retries, backoff_s)

    def mapper(fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        chunks = _chunks(list(items), chunk_size)
        window: deque = deque()
        index = 0
        for chunk in chunks:
            window.append(chunk_task.submit(fn, chunk, index, label))
            index += 1
            if len(window) >= 2 * workers:
                yield from window.popleft().result()
        while window:
            yield from window.popleft().result()

    return mapper


@contextlib.contextmanager
def _working_directory(path: str | os.PathLike) -> Iterator[None]:
    """Stage commands use paths relative to the repository root, as under `dvc repro`."""
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def stage_entry(stage: str, repo: str | os.PathLike) -> tuple[Callable[..., Any], list[str]]:
    """The stage module's `main` and its argv, from the stage's `python -m <module> ...` cmd in dvc.yaml."""
    cmd = stage_command(stage, repo)
    argv = shlex.split(cmd)
    if len(argv) < 3 or argv[0] not in ("python", "python3") or argv[1] != "-m":
        raise ValueError(f"{Path(repo) / 'dvc.yaml'}: stage {stage!r} cmd must be `python -m <module> ...` to fan out")
    module = importlib.import_module(argv[2])
    main = getattr(module, "main", None)
    if main is None or "mapper" not in inspect.signature(main).parameters:
        raise AttributeError(f"{module.__file__}: no main(argv, *, mapper) to fan stage {stage!r} out")
    return main, argv[3:]


def supports_fan_out(stage: str, repo: str | os.PathLike) -> bool:
    """Whether the stage's module offers `main(argv, *, mapper)`."""
    try:
        stage_entry(stage, repo)
    except (AttributeError, ValueError, ImportError):
        return False
    return True


@flow(name="cgstvg-fanout", flow_run_name="fan out {stage}")
def fan_out_stage(
    stage: str, repo: str, workers: int, chunk_size: int = 1, retries: int = 0, backoff_s: float = 10.0
) -> None:
    """Run the stage's own `main` with a Prefect mapper; the caller picks the task runner with `with_options`."""
    main, argv = stage_entry(stage, repo)
    with _working_directory(repo):
        main(argv, mapper=prefect_mapper(stage, workers, chunk_size, retries, backoff_s))


def run_fan_out(stage: str, repo: str, settings: FlowSettings) -> None:
    """`fan_out_stage` on the runner and with the retries from params.yaml (`flows`)."""
    runner = make_task_runner(settings.task_runner, settings.workers, settings.dask_address)
    fan_out_stage.with_options(task_runner=runner)(
        stage, repo, settings.workers, settings.chunk_size, settings.retries.get(stage, 0), settings.retry_backoff_s
    )
