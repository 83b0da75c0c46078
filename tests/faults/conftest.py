"""The full fault set runs under `-m faults` (or `python bench/faults.py`); the normal run takes the fast kinds."""

from __future__ import annotations


def pytest_collection_modifyitems(config, items):
    # deselected rather than skipped, and also under another -m (`make test-fast` passes `-m "not slow"`)
    if "faults" in (config.getoption("markexpr") or ""):
        return
    kept = [item for item in items if item.get_closest_marker("faults") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if item.get_closest_marker("faults")])
        items[:] = kept
