"""Named internal tensors of one forward pass, for the tests that compare them with the release's fixtures.

A `Recorder` registers forward hooks (module outputs) and forward pre-hooks (module inputs, by the names of the
forward's arguments) and removes them when its `with` block ends; `put` adds the few tensors that are no module's
input or output. Names may hold `{k}`, replaced by the index of the module's call in this pass (the decoding stage
of a module that runs once per stage). A nested output (a tuple, a NamedTuple) takes names of the same structure,
None where nothing is recorded; a None value is not recorded.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor, nn

Names = str | tuple[Any, ...] | None


class Recorder:
    def __init__(self) -> None:
        self.tensors: dict[str, Tensor] = {}
        self._stacks: dict[str, list[Tensor]] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _store(self, names: Names, value: Any, call: int) -> None:
        if names is None or value is None:
            return
        if isinstance(names, str):
            self.tensors[names.format(k=call)] = value
            return
        for name, part in zip(names, value, strict=True):
            self._store(name, part, call)

    def output(self, module: nn.Module, names: Names) -> None:
        """Record every call's output of `module` under `names`."""
        calls = iter(range(1 << 30))
        self._handles.append(module.register_forward_hook(lambda m, args, out: self._store(names, out, next(calls))))

    def inputs(self, module: nn.Module, **names: Names) -> None:
        """Record arguments of every call of `module`: argument name of its forward -> names."""
        signature = inspect.signature(module.forward)
        calls = iter(range(1 << 30))

        def hook(m: nn.Module, args: tuple, kwargs: dict) -> None:
            bound = signature.bind(*args, **kwargs).arguments
            call = next(calls)
            for argument, argument_names in names.items():
                self._store(argument_names, bound.get(argument), call)

        self._handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))

    def stack(self, module: nn.Module, name: str) -> None:
        """The outputs of every call of `module`, stacked along a new first dimension under `name`."""
        outputs = self._stacks.setdefault(name, [])
        self._handles.append(module.register_forward_hook(lambda m, args, out: outputs.append(out)))

    def put(self, tensors: dict[str, Tensor]) -> None:
        self.tensors.update(tensors)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.tensors.update({name: torch.stack(values) for name, values in self._stacks.items() if values})
