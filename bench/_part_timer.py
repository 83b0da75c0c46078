"""Wall time of each part of a CG-STVG forward, from forward pre/post hooks (shared by the step benches).

The CPU runs synchronously, so the wall time between a module's pre- and post-hook is its own time, its children's
included. The head drives its decoders layer by layer (it never calls the decoder modules), so their layers are
timed; ICG and ICR (one `InstanceContextRefinement` call per stage) count together as `head.icr`; `head.other`
is the head's time outside the listed parts (input projections, anchor init, the decoders' query maths, output MLPs).
Only calls while `timer.active` is true are counted, so the recomputations of activation checkpointing (which run
the same modules again inside `backward`) land in the backward's time, not in the forward parts'.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

HEAD_PARTS = ("head.encoder", "head.temporal_decoder", "head.spatial_decoder", "head.icr")
BACKBONES = ("appearance", "text", "motion")


class PartTimer:
    def __init__(self, model: Any) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.active = True
        self._starts: dict[str, float] = {}
        for name in BACKBONES + HEAD_PARTS[:-1]:
            try:
                module = model.get_submodule(name)
            except AttributeError:  # e.g. no motion module: ours reads the cached motion features
                continue
            modules = list(module.layers) if name.endswith("_decoder") else [module]
            for i, sub in enumerate(modules):
                self._hook(sub, name, f"{name}.{i}")
        head = model.get_submodule("head")
        if head.icr is not None:  # one module call per stage: ICG's pooling, then ICR's selection and context
            self._hook(head.icr, "head.icr", "icr")
        self._hook(head, "head.total", "head")

    def _hook(self, module: Any, part: str, key: str) -> None:
        module.register_forward_pre_hook(lambda m, a: self._starts.__setitem__(key, time.perf_counter()))
        module.register_forward_hook(lambda m, a, o: self._add(part, time.perf_counter() - self._starts[key]))

    def _add(self, part: str, seconds: float) -> None:
        if self.active:
            self.seconds[part] += seconds

    def timed(self, part: str, fn: Any) -> Any:
        """`fn()`, its wall time added to `part` (always counted)."""
        t0 = time.perf_counter()
        out = fn()
        self.seconds[part] += time.perf_counter() - t0
        return out

    def parts(self, divide: float = 1.0) -> dict[str, float]:
        """Seconds per part divided by `divide` (steps), with `head.total` split into the listed parts + other."""
        out = {k: v / divide for k, v in self.seconds.items()}
        listed = sum(out.get(p, 0.0) for p in HEAD_PARTS)
        out["head.other"] = out.pop("head.total", 0.0) - listed
        return out
