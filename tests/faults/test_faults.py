"""The fault suite of issue 16: every kind in `fault_kinds.KINDS` must be `handled` (see that module)."""

from __future__ import annotations

import pytest
import torch

from fault_kinds import KINDS, Context, run_kind


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny models run much faster on one thread than on two busy ones
    yield Context(tmp_path_factory.mktemp("faults"))
    torch.set_num_threads(threads)


@pytest.mark.parametrize(
    "kind", [pytest.param(k, id=k.name, marks=() if k.fast else pytest.mark.faults) for k in KINDS]
)
def test_fault_is_handled(kind, context):
    result = run_kind(kind, context)
    assert result.outcome == "handled", f"{kind.name} ({kind.expect}): {result.outcome}: {result.detail}"


def test_the_registry_covers_the_audit():
    assert len(KINDS) >= 45
    assert {k.group for k in KINDS} == {"silent", "crash", "unclear", "handled", "extra"}
