"""Many multi-step episodes sampled in lockstep: each turn, all pending prompts in one batch.

An episode is ordinary blocking code that calls its policy (`messages -> text`) whenever
it needs a completion (e.g. a memory framework reading a history chunk by chunk). Each
runs in its own thread, but only one at a time (a baton), so the code they share (an
embedder, a memory library) never runs concurrently. When every unfinished episode waits
on its policy, their prompts go to `sample` as one batch, in episode order, so a run is
reproducible whatever order the threads woke up in.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
Messages = list[dict[str, str]]
BatchSampler = Callable[[int, list[tuple[int, Messages]]], list[Any]]  # (round, [(episode, messages)]) -> outputs


class Aborted(RuntimeError):
    """Sampling failed for the whole batch; every waiting episode stops."""


class EpisodePolicy:
    """One episode's policy: hands its prompt to the batch and returns the sampled text; keeps
    every output (e.g. Rollouts with token ids) in `outputs`, in call order."""

    def __init__(self, runner: Lockstep, index: int, text: Callable[[Any], str]):
        self.runner, self.index, self.text = runner, index, text
        self.outputs: list[Any] = []

    @property
    def rollouts(self) -> list[Any]:  # the name `run_trajectory` looks for
        return self.outputs

    def __call__(self, messages: Messages) -> str:
        output = self.runner.wait_for(self.index, messages)
        self.outputs.append(output)
        return self.text(output)


class Lockstep:
    def __init__(self, sample: BatchSampler, text: Callable[[Any], str] = lambda out: out.text):
        self.sample, self.text = sample, text
        self.baton = threading.Lock()
        self.cond = threading.Condition()
        self.pending: dict[int, Messages] = {}
        self.results: dict[int, Any] = {}
        self.done = 0
        self.error: BaseException | None = None
        self.rounds = 0

    def wait_for(self, index: int, messages: Messages) -> Any:
        with self.cond:
            if self.error is not None:  # sampling already failed: the episode runs to its end without it
                raise Aborted(f"sampling failed: {self.error}")
            self.pending[index] = messages
            self.cond.notify_all()
        self.baton.release()  # let the next episode run up to its own call
        with self.cond:
            self.cond.wait_for(lambda: index in self.results or self.error is not None)
            result = self.results.pop(index, None)
            failed = self.error
        self.baton.acquire()
        if failed is not None and result is None:
            raise Aborted(f"sampling failed: {failed}") from failed
        return result

    def run(self, episodes: Sequence[Callable[[EpisodePolicy], T]]) -> list[T]:
        """Every episode's return value, in order; the first error (an episode's or the
        sampler's) is raised once all have stopped."""
        out: list[Any] = [None] * len(episodes)
        errors: list[BaseException | None] = [None] * len(episodes)

        def body(i: int, episode: Callable[[EpisodePolicy], T]) -> None:
            self.baton.acquire()
            try:
                out[i] = episode(EpisodePolicy(self, i, self.text))
            except BaseException as err:  # noqa: BLE001 - re-raised by run() once all stopped
                errors[i] = err
            finally:
                self.baton.release()
                with self.cond:
                    self.done += 1
                    self.cond.notify_all()

        threads = [threading.Thread(target=body, args=(i, e), name=f"episode-{i}", daemon=True)
                   for i, e in enumerate(episodes)]
        for t in threads:
            t.start()
        while True:
            with self.cond:
                self.cond.wait_for(lambda: self.done + len(self.pending) == len(episodes))
                if not self.pending:
                    break
                if self.error is not None:  # those still waiting see the error and stop
                    self.pending.clear()
                    self.cond.notify_all()
                    continue
                batch = sorted(self.pending.items())
                self.pending.clear()
            try:
                outputs = self.sample(self.rounds, batch)
                if len(outputs) != len(batch):
                    raise ValueError(f"the sampler returned {len(outputs)} outputs for {len(batch)} prompts")
            except BaseException as err:  # noqa: BLE001 - every waiting episode is stopped, then it is raised
                with self.cond:
                    self.error = err
                    self.cond.notify_all()
                continue
            self.rounds += 1
            with self.cond:
                self.results.update({i: o for (i, _), o in zip(batch, outputs, strict=True)})
                self.cond.notify_all()
        for t in threads:
            t.join()
        if self.error is not None:
            raise self.error
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first
        return out


__all__ = ["Aborted", "EpisodePolicy", "Lockstep"]
