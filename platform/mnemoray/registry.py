"""Name -> implementation tables for the pluggable parts: engines, memory frameworks,
datasets and rewards (docs/ARCHITECTURE.md, "Registries").

Every place that offers a choice (config validation, CLI help, job checks) reads the
same table, so adding an implementation is one module plus one `register` call. An entry
names its implementation as "package.module:attribute" and imports it on first use:
listing names or checking a capability imports nothing heavy (no torch, no vLLM).
Plugins register objects directly (`target=MyClass`).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any, Generic, Protocol, TypeVar


class Spec(Protocol):
    name: str
    target: Any


S = TypeVar("S", bound=Spec)


class UnknownName(ValueError):
    """A name no entry has; the message lists the registered ones."""


def load_target(target: Any) -> Any:
    """`"pkg.module:attr"` imported, or the object itself when it is not a string."""
    if not isinstance(target, str):
        return target
    module, _, attr = target.partition(":")
    if not module or not attr:
        raise ValueError(f"target {target!r} must look like 'package.module:attribute'")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class Registry(Generic[S]):
    """Specs by name, in registration order; `load(name)` imports the implementation."""

    def __init__(self, kind: str):
        self.kind = kind
        self._specs: dict[str, S] = {}
        self._loaded: dict[str, Any] = {}

    def register(self, spec: S, *, replace: bool = False) -> S:
        if spec.name in self._specs and not replace:
            raise ValueError(f"{self.kind} {spec.name!r} is already registered")
        self._specs[spec.name] = spec
        self._loaded.pop(spec.name, None)
        return spec

    def unregister(self, name: str) -> None:
        self._specs.pop(name, None)
        self._loaded.pop(name, None)

    def names(self, **capabilities: Any) -> list[str]:
        """Registered names, optionally only those whose spec fields equal `capabilities`."""
        return [s.name for s in self._specs.values()
                if all(getattr(s, key) == value for key, value in capabilities.items())]

    def check(self, name: str) -> str:
        """`name` if registered, else UnknownName listing the choices (config validators use it)."""
        if name not in self._specs:
            raise UnknownName(f"unknown {self.kind} {name!r}; choose one of {self.names()}")
        return name

    def spec(self, name: str) -> S:
        return self._specs[self.check(name)]

    def load(self, name: str) -> Any:
        spec = self.spec(name)
        if name not in self._loaded:
            self._loaded[name] = load_target(spec.target)
        return self._loaded[name]

    def help(self, **capabilities: Any) -> str:
        """The names as a CLI help fragment: "a, b or c"."""
        names = self.names(**capabilities)
        return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[S]:
        return iter(list(self._specs.values()))

    def __len__(self) -> int:
        return len(self._specs)

