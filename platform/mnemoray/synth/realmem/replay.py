"""How the synchronous memory framework inside a `PersonaMachine` waits for the fleet.

The `realmem` memory framework calls its engine and its sentence encoder synchronously.
Inside a persona machine both are replays: `ReplayEngine` answers calls already answered
and raises `NeedAnswers` for the rest; a deferred `ReplayEmbedder` returns vectors already
handed in and raises `NeedVectors` for the rest. The machine catches the signal, yields
the work to its scheduler and reruns the step with the answers known
(`mnemoray.synth.realmem.machine`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mnemoray.config.synth import RealMemSynthConfig
from mnemoray.llm.types import ChatRequest, ChatResult


class NeedAnswers(BaseException):  # noqa: N818 - a control signal, not an error
    """Raised by `ReplayEngine` through the memory framework for calls not answered yet.

    A BaseException so the framework's `except Exception` around engine calls lets it pass.
    """

    def __init__(self, requests: list[ChatRequest]):
        super().__init__(f"{len(requests)} calls to answer")
        self.requests = requests


class ReplayEngine:
    """The memory framework's engine: answers from `known`, raises NeedAnswers for the rest."""

    name = "replay"
    model = "replay"

    def __init__(self) -> None:
        self.known: dict[str, ChatResult] = {}

    def generate(self, requests: list[ChatRequest]) -> list[ChatResult]:
        missing = [r for r in requests if r.id not in self.known]
        if missing:
            raise NeedAnswers(missing)
        return [self.known[r.id].model_copy(update={"id": r.id}) for r in requests]


class NeedVectors(BaseException):  # noqa: N818 - a control signal, not an error
    """Raised by a deferred `ReplayEmbedder` for texts it has no vectors for yet."""

    def __init__(self, texts: list[str]):
        super().__init__(f"{len(texts)} texts to encode")
        self.texts = texts


class ReplayEmbedder:
    """The memory's sentence encoder: the wrapped embedder, or (deferred) vectors handed in."""

    def __init__(self, embedder: Any, deferred: bool = False):
        self.embedder = embedder
        self.deferred = deferred
        self.known: dict[str, np.ndarray] = {}

    @property
    def dim(self) -> int:
        return self.embedder.dim

    def encode(self, texts: list[str]) -> np.ndarray:
        if not self.deferred:
            return self.embedder.encode(texts)
        missing = [t for t in dict.fromkeys(texts) if t not in self.known]
        if missing:
            raise NeedVectors(missing)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self.known[t] for t in texts])


def new_memory(cfg: RealMemSynthConfig, embedder: Any = None, deferred: bool = False) -> Any:
    """The realmem framework as the machine's memory manager (its engine replays the machine's answers;
    `deferred`: its sentence encodes become the machine's `EncodeRequest`s)."""
    from mnemoray.index.embedder import Embedder
    from mnemoray.memory.realmem import RealMemMemory

    embedder = embedder if embedder is not None else Embedder.from_index_config(cfg.memory.index)
    return RealMemMemory(cfg.memory, engine=ReplayEngine(), embedder=ReplayEmbedder(embedder, deferred),
                         max_retries=0)


__all__ = ["NeedAnswers", "NeedVectors", "ReplayEmbedder", "ReplayEngine", "new_memory"]
