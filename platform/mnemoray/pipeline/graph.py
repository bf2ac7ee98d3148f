"""The pipeline's stage graph, plain Python: which stages run, which are skipped, and why.

Each stage writes into its own folder under the work root and finishes by writing
`_done.json` (atomically, last) with the hash of its settings and of the stages it reads.
A rerun skips a stage whose marker carries the same hash; a stage whose settings (or an
input's) changed runs again, after its folder is cleared, and so do the stages that read
it. A stage killed mid-way has no marker: it runs again on its own partial outputs (every
stage resumes from them). A failed stage is recorded with its error; stages that need it
are marked not run. A *live* stage (a running service) has nothing on disk to reuse: it
runs again whenever a stage that needs it runs (docs/ARCHITECTURE.md, "The pipeline").
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DONE = "_done.json"
STARTED = "_started.json"

# stage statuses, as the report shows them
RAN, SKIPPED, FAILED, NOT_RUN, DISABLED = "ran", "skipped (done before)", "failed", "not run", "disabled"


@dataclass
class StageResult:
    """What a stage reports: records in / out, its key figure, links to its outputs (relative
    to the stage folder), and anything the stages after it read (`values`)."""

    records_in: int | None = None
    records_out: int | None = None
    figure: str = ""
    links: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"records_in": self.records_in, "records_out": self.records_out, "figure": self.figure,
                "links": self.links, "notes": self.notes, "values": self.values}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StageResult:
        return cls(data.get("records_in"), data.get("records_out"), data.get("figure", ""),
                   dict(data.get("links") or {}), list(data.get("notes") or []), dict(data.get("values") or {}))


@dataclass
class StageContext:
    """What a running stage sees: its folder, the results of the stages it reads, and where
    to register what must be closed (right after the stage; for a live stage, after the
    last stage that reads it)."""

    name: str
    out: Path
    inputs: dict[str, StageResult]
    stack: contextlib.ExitStack
    log: Callable[[str], None] = print


@dataclass(frozen=True)
class Stage:
    """One step: `run(ctx)` writes into ctx.out and returns its StageResult. `settings` is
    what the done marker hashes (the stage's resolved config, JSON-able)."""

    name: str
    run: Callable[[StageContext], StageResult]
    inputs: tuple[str, ...] = ()
    settings: Any = None
    description: str = ""
    live: bool = False  # a running service: rerun whenever a stage that needs it runs


@dataclass
class StageRecord:
    name: str
    description: str
    status: str
    seconds: float | None = None
    result: StageResult | None = None
    error: str | None = None
    reason: str = ""
    config_hash: str = ""


class GraphError(ValueError):
    """A stage graph that cannot run (unknown input, duplicate or unordered stage)."""


def settings_hash(settings: Any, upstream: list[str]) -> str:
    text = json.dumps({"settings": settings, "upstream": upstream}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def read_marker(folder: Path, name: str = DONE) -> dict[str, Any] | None:
    try:
        return json.loads((folder / name).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class StageGraph:
    """Stages in run order; each stage's inputs must come before it."""

    def __init__(self, stages: list[Stage]):
        seen: set[str] = set()
        for stage in stages:
            if stage.name in seen:
                raise GraphError(f"stage {stage.name!r} is listed twice")
            missing = [i for i in stage.inputs if i not in seen]
            if missing:
                raise GraphError(f"stage {stage.name!r} reads {missing}, which are not earlier stages")
            seen.add(stage.name)
        self.stages = stages
        self.by_name = {s.name: s for s in stages}

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.stages]

    def hashes(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for stage in self.stages:
            out[stage.name] = settings_hash(stage.settings, [out[i] for i in stage.inputs])
        return out

    def after(self, name: str) -> list[str]:
        """`name` and every stage after it in run order."""
        if name not in self.by_name:
            raise GraphError(f"unknown stage {name!r}; the stages are {self.names}")
        return self.names[self.names.index(name):]

    def needs(self, name: str) -> set[str]:
        """Every stage `name` reads, directly or through others."""
        out: set[str] = set()
        todo = list(self.by_name[name].inputs)
        while todo:
            n = todo.pop()
            if n not in out:
                out.add(n)
                todo.extend(self.by_name[n].inputs)
        return out

    def run(self, root: Path, *, rerun: list[str] | None = None, disabled: list[str] | None = None,
            log: Callable[[str], None] = print,
            on_stage: Callable[[str, Path], None] | None = None) -> list[StageRecord]:
        """Run (or skip) every stage in order; never raises for a stage's own failure.

        `rerun`: stages to run even if done (their markers are dropped first); `disabled`:
        stages not to run at all (reported as such; stages that need them are not run).
        `on_stage(name, folder)` is called after each stage that ran or failed.
        """
        root.mkdir(parents=True, exist_ok=True)
        hashes = self.hashes()
        rerun_set, disabled_set = set(rerun or []), set(disabled or [])
        for name in rerun_set | disabled_set:
            if name not in self.by_name:
                raise GraphError(f"unknown stage {name!r}; the stages are {self.names}")
        will_run = self._plan(root, hashes, rerun_set, disabled_set)
        records: dict[str, StageRecord] = {}
        results: dict[str, StageResult] = {}
        open_live: dict[str, contextlib.ExitStack] = {}  # live stages still up, closed after their last reader
        last_reader = {s.name: max((j for j, r in enumerate(self.stages) if s.name in r.inputs), default=-1)
                       for s in self.stages}
        with contextlib.ExitStack() as outer:
            outer.callback(lambda: [st.close() for st in reversed(list(open_live.values()))])
            for index, stage in enumerate(self.stages):
                for name in [n for n in open_live if last_reader[n] < index]:
                    open_live.pop(name).close()
                rec = StageRecord(stage.name, stage.description, NOT_RUN, config_hash=hashes[stage.name])
                records[stage.name] = rec
                folder = root / stage.name
                blocked = [i for i in stage.inputs if records[i].status in (FAILED, NOT_RUN, DISABLED)]
                if stage.name in disabled_set:
                    rec.status, rec.reason = DISABLED, "disabled in the config"
                    continue
                if blocked:
                    rec.reason = "needs " + ", ".join(f"{b} ({records[b].status})" for b in blocked)
                    continue
                if not will_run[stage.name]:
                    marker = read_marker(folder)
                    if marker is None:  # a live stage nothing needed, that never ran
                        rec.reason = "nothing after it needed it"
                        continue
                    rec.status, rec.seconds = SKIPPED, marker.get("seconds")
                    rec.result = results[stage.name] = StageResult.from_json(marker.get("result") or {})
                    continue
                self._prepare(folder, hashes[stage.name])
                log(f"[pipeline] {stage.name}: running")
                stack = contextlib.ExitStack()
                if stage.live:
                    open_live[stage.name] = stack
                ctx = StageContext(stage.name, folder, {i: results[i] for i in stage.inputs if i in results},
                                   stack, log)
                start = time.perf_counter()
                try:
                    result = stage.run(ctx)
                except Exception as err:  # a stage's failure is reported, the graph goes on
                    rec.status, rec.seconds = FAILED, time.perf_counter() - start
                    rec.error = f"{type(err).__name__}: {err}"
                    (folder / "error.txt").write_text(traceback.format_exc(), encoding="utf-8")
                    log(f"[pipeline] {stage.name}: FAILED after {rec.seconds:.1f} s: {rec.error}")
                else:
                    rec.status, rec.seconds, rec.result = RAN, time.perf_counter() - start, result
                    results[stage.name] = result
                    (folder / "error.txt").unlink(missing_ok=True)
                    write_json_atomic(folder / DONE, {"stage": stage.name, "config_hash": hashes[stage.name],
                                                      "seconds": rec.seconds, "finished": time.time(),
                                                      "result": result.to_json()})
                    log(f"[pipeline] {stage.name}: done in {rec.seconds:.1f} s: {result.figure}")
                if not stage.live or rec.status == FAILED:
                    open_live.pop(stage.name, None)
                    stack.close()
                if on_stage is not None:
                    on_stage(stage.name, folder)
        return [records[n] for n in self.names]

    def _plan(self, root: Path, hashes: dict[str, str], rerun: set[str], disabled: set[str]) -> dict[str, bool]:
        """Which stages will run: not done with this hash, asked to rerun, or reading one
        that runs; a live stage only when a stage that needs it runs."""
        will: dict[str, bool] = {}
        for stage in self.stages:
            marker = read_marker(root / stage.name)
            stale = marker is None or marker.get("config_hash") != hashes[stage.name]
            will[stage.name] = stage.name not in disabled and (
                stale or stage.name in rerun or any(will[i] for i in stage.inputs))
        for stage in reversed(self.stages):
            if stage.live:
                will[stage.name] = stage.name not in disabled and any(
                    will[s.name] for s in self.stages if stage.name in s.inputs)
        return will

    @staticmethod
    def _prepare(folder: Path, config_hash: str) -> None:
        """Keep a killed run's partial outputs to resume from, unless they were made with other settings."""
        started = read_marker(folder, STARTED)
        if folder.exists() and (read_marker(folder) is not None
                                or (started is not None and started.get("config_hash") != config_hash)):
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(folder / STARTED, {"config_hash": config_hash, "started": time.time()})


@contextlib.contextmanager
def temporary_env(values: dict[str, str]) -> Iterator[None]:
    """Environment variables set for a block (a stage that calls code reading the environment)."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


__all__ = ["DISABLED", "DONE", "FAILED", "NOT_RUN", "RAN", "SKIPPED", "STARTED", "GraphError", "Stage",
           "StageContext", "StageGraph", "StageRecord", "StageResult", "read_marker", "settings_hash",
           "temporary_env", "write_json_atomic"]
