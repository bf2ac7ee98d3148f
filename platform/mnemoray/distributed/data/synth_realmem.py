"""`mnemoray synth realmem` on Ray: many personas at once, each strictly sequential, every
LLM call of every persona through one engine fleet.

Inside a persona, session k needs the memory of sessions < k and every turn depends on the
previous one, so a persona is a chain of single calls. The parallelism comes from running
many personas at once: persona worker actors (async, `personas_per_worker` personas each)
drive one `PersonaMachine` per persona (`mnemoray.synth.realmem.machine`) and send its next
requests to the shared fleet (`mnemoray.distributed.actors.engine_fleet`), so the fleet's
in-flight bound stays full although each persona waits on its own last call. A worker's
own CPU per call is what caps the fleet's fill, so it batches across its personas
(`mnemoray.synth.realmem.batching`): calls asked in the same moment go to the fleet as one
actor call (`ray.batch_calls`), and the machines' sentence encodes (retrieval, dedup) run as
one encode per batch in a thread while the event loop serves the other personas.

Outputs are the stage stores of `mnemoray.synth.store` (`stages/<name>/kept|rejects|done`):
outlines, events, session_plans, memory, sessions, histories; the RealMem-format files in
`dataset/`; a memory checkpoint per persona in `state/`. Workers buffer outcome rows and write
them as parts every `write_every` rows (memory rows before their sessions), then the
checkpoints, so on every crash point "a session done ⇒ its plan is done" holds and a
checkpoint never covers a session that is not written. A rerun reads the done ids, hands each
unfinished persona what it already has, and redoes only the rest (ids are deterministic).
The driver holds ids and small summaries only.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from mnemoray.config.synth import RealMemSynthConfig
from mnemoray.distributed.actors.engine_fleet import FleetClient, start_fleet, stop_fleet
from mnemoray.distributed.data.synth_rolememo import resolve
from mnemoray.distributed.runtime import ray_session
from mnemoray.llm.rows import maybe_json
from mnemoray.llm.types import ChatRequest, ChatResult, Usage
from mnemoray.synth.realmem.batching import Coalescer, EncodeBatcher
from mnemoray.synth.realmem.inputs import file_name, load_personas
from mnemoray.synth.realmem.machine import STAGES, EncodeRequest, PersonaMachine, Resume
from mnemoray.synth.realmem.public import write_public
from mnemoray.synth.realmem.replay import new_memory
from mnemoray.synth.store import StageStore, expand

Progress = Callable[[str, int, "int | None"], None]
REQUEST_SCHEMA = pa.schema([("id", pa.string()), ("messages", pa.string()), ("params", pa.string()),
                            ("seed", pa.int64()), ("json_schema", pa.string())])


def requests_table(requests: list[ChatRequest]) -> pa.Table:
    return pa.Table.from_pylist([{
        "id": r.id, "messages": json.dumps([m.model_dump() for m in r.messages]), "params": r.params.model_dump_json(),
        "seed": r.seed, "json_schema": json.dumps(r.json_schema) if r.json_schema is not None else None,
    } for r in requests], schema=REQUEST_SCHEMA)


def results_of(table: pa.Table) -> list[ChatResult]:
    out = []
    for row in table.to_pylist():
        out.append(ChatResult(id=row["id"], text=row.get("text") or "", parsed=maybe_json(row.get("parsed")),
                              error=row.get("error"), error_kind=row.get("error_kind"),
                              attempts=int(row.get("attempts") or 0), latency_s=float(row.get("latency_s") or 0.0),
                              usage=Usage(prompt_tokens=int(row.get("prompt_tokens") or 0),
                                          completion_tokens=int(row.get("completion_tokens") or 0))))
    return out


def state_path(out: Path, persona_id: str) -> Path:
    return Path(out) / "state" / f"{persona_id}.json"


def write_state(out: Path, persona_id: str, state: dict[str, Any]) -> None:
    path = state_path(out, persona_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state), encoding="utf-8")
    os.replace(tmp, path)


class PersonaWorker:
    """An async actor running up to `personas_per_worker` persona machines at once."""

    def __init__(self, cfg_json: str, fleet: list[Any]):
        from mnemoray.index.embedder import Embedder
        from mnemoray.synth.stages import count_tokens

        self.cfg = RealMemSynthConfig.model_validate_json(cfg_json)
        self.client = FleetClient(fleet)
        idx = self.cfg.memory.index  # short texts encode cheaper in small chunks (RealMemRayConfig.encode_batch)
        self.embedder = Embedder(idx.embedding_model, idx.device, self.cfg.ray.encode_batch, idx.max_seq_length,
                                 idx.embedding_cache)
        self.encoder = EncodeBatcher(self.embedder)  # one encode for the texts of all personas waiting
        # calls asked together go to the fleet together (one actor call, one table); any number in flight
        self.calls = Coalescer(self._ask, self.cfg.ray.batch_calls, max_running=1 << 20)
        tokenizer = self.cfg.tokenizer
        self.count_tokens = lambda text: count_tokens(text, tokenizer)
        self.buffer: dict[str, list[dict[str, Any]]] = {s: [] for s in STAGES}
        self.checkpoints: dict[str, dict[str, Any]] = {}
        self.lock = asyncio.Lock()

    async def _ask(self, requests: list[ChatRequest]) -> list[ChatResult]:
        return results_of(await self.client.answer(requests_table(requests)))

    def _take(self, machine: PersonaMachine) -> None:
        rows = machine.drain()
        for stage, row in rows:
            self.buffer[stage].append(row)
        if any(stage == "memory" for stage, _ in rows):
            self.checkpoints[machine.pid] = machine.checkpoint()

    async def _flush(self, force: bool = False) -> None:
        async with self.lock:
            if not force and sum(map(len, self.buffer.values())) < self.cfg.ray.write_every:
                return
            buffer, self.buffer = self.buffer, {s: [] for s in STAGES}
            checkpoints, self.checkpoints = self.checkpoints, {}
            for stage in STAGES:  # stage order: what a stage reads is on disk before its outcomes
                kept, rejects, done = expand(buffer[stage], stage)
                if done:
                    StageStore(self.cfg.out, stage).write_part(kept, rejects, done)
            for pid, state in checkpoints.items():
                write_state(self.cfg.out, pid, state)

    async def run(self, persona: dict[str, Any], resume: dict[str, Any]) -> dict[str, Any]:
        """One persona to the end; a crash of its machine becomes a histories reject, not a failed job."""
        try:
            return await self._run(persona, resume)
        except Exception as err:  # noqa: BLE001 - listed with the traceback; the other personas go on
            import traceback

            self.buffer["histories"].append({
                "input_id": persona["id"], "persona_id": persona["id"], "kept": "[]", "calls": 0, "attempts": 0,
                "prompt_tokens": 0, "completion_tokens": 0, "latency_s": 0.0,
                "rejects": json.dumps([{"id": f"hist-{persona['id']}", "persona_id": persona["id"],
                                        "reason": "persona_error", "detail": f"{type(err).__name__}: {err}",
                                        "raw": traceback.format_exc()[-4000:]}])})
            await self._flush(force=True)
            return {"persona_id": persona["id"], "sessions": 0, "calls": 0, "error": str(err)}

    async def _run(self, persona: dict[str, Any], resume: dict[str, Any]) -> dict[str, Any]:
        machine = PersonaMachine(persona, self.cfg, new_memory(self.cfg, self.embedder, deferred=True),
                                 Resume(done={k: set(v) for k, v in resume["done"].items()}, kept=resume["kept"],
                                        checkpoint=resume["checkpoint"]), self.count_tokens)
        requests = machine.start()
        calls = 0
        while requests:
            if isinstance(requests, EncodeRequest):
                requests = machine.feed_vectors(await self.encoder.encode(requests.texts))
                continue
            calls += len(requests)
            requests = machine.feed(await self.calls.ask(requests))
            self._take(machine)
            await self._flush()
        write_public(machine.public_history(), Path(self.cfg.out) / "dataset", persona["file_stem"])
        self._take(machine)  # the history row after its file
        await self._flush(force=True)
        return {"persona_id": persona["id"], "sessions": len(machine.sessions), "calls": calls}


# -- driver -------------------------------------------------------------------------------------

def prepare_inputs(cfg: RealMemSynthConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(Re)write the personas stage; returns the persona seeds and the input errors."""
    seeds, errors = load_personas(cfg.personas, cfg.goals, cfg.limit, cfg.plan.projects)
    if not seeds:
        detail = f" ({len(errors)} invalid, first: {errors[0].message()})" if errors else ""
        raise ValueError(f"{cfg.personas}: no valid personas{detail}")
    stems: set[str] = set()
    for s in seeds:
        stem = file_name(s["name"])
        s["file_stem"] = stem if stem not in stems else f"{stem}_{s['id'][2:10]}"
        stems.add(s["file_stem"])
    kept = [{"id": s["id"], "persona_id": s["id"], "record": json.dumps(s, ensure_ascii=False)} for s in seeds]
    rejects = [{"id": f"{e.file}:{e.record}", "persona_id": "", "stage": "personas", "input_id": f"{e.record}",
                "reason": "invalid_persona", "detail": e.message(), "raw": ""} for e in errors]
    done = [{"input_id": s["id"], "persona_id": s["id"], "n_kept": 1, "n_rejected": 0, "calls": 0, "attempts": 0,
             "prompt_tokens": 0, "completion_tokens": 0, "latency_s": 0.0} for s in seeds]
    StageStore(cfg.out, "personas").replace_all(kept, rejects, done)
    return seeds, [e.to_dict() for e in errors]


def resume_inputs(cfg: RealMemSynthConfig, pids: list[str]) -> dict[str, dict[str, Any]]:
    """For each persona: done ids per stage, kept records of the stages it needs, its checkpoint."""
    out = {p: {"done": {}, "kept": {}, "checkpoint": None} for p in pids}
    started: set[str] = set()
    for stage in STAGES:
        done = StageStore(cfg.out, stage).read("done", ["input_id", "persona_id"])
        for iid, pid in zip(done.column(0).to_pylist(), done.column(1).to_pylist()):
            if pid in out:
                out[pid]["done"].setdefault(stage, []).append(iid)
                started.add(pid)
    if not started:
        return out
    keep = pa.array(sorted(started), pa.string())
    for stage in ("outlines", "events", "session_plans", "sessions"):
        for path in StageStore(cfg.out, stage).files("kept"):
            table = pq.read_table(path, columns=["persona_id", "record"])
            table = table.filter(pc.is_in(table.column("persona_id"), value_set=keep))
            for pid, raw in zip(table.column(0).to_pylist(), table.column(1).to_pylist()):
                out[pid]["kept"].setdefault(stage, []).append(json.loads(raw))
    for pid in started:
        path = state_path(cfg.out, pid)
        if path.is_file():
            out[pid]["checkpoint"] = json.loads(path.read_text(encoding="utf-8"))
    return out


def run_personas(cfg: RealMemSynthConfig, engine: Any, seeds: list[dict[str, Any]],
                 progress: Progress | None = None) -> dict[str, Any]:
    for stage in STAGES:
        StageStore(cfg.out, stage).clean_orphans()
    finished = StageStore(cfg.out, "histories").done_ids()
    pending = [s for s in seeds if s["id"] not in finished]
    info: dict[str, Any] = {"pending": len(pending), "finished": 0}
    if not pending:
        return info
    resume = resume_inputs(cfg, [s["id"] for s in pending])
    fleet = start_fleet(engine, cfg.ray.llm_actors)
    try:
        worker_cls = ray.remote(PersonaWorker).options(max_concurrency=cfg.ray.personas_per_worker,
                                                       num_cpus=cfg.ray.worker_cpus)
        workers = [worker_cls.remote(cfg.model_dump_json(), fleet) for _ in range(cfg.ray.workers)]
        slots = cfg.ray.workers * cfg.ray.personas_per_worker
        queue = list(enumerate(pending))
        running: dict[Any, str] = {}
        while queue or running:
            while queue and len(running) < slots:
                i, seed = queue.pop(0)
                ref = workers[i % len(workers)].run.remote(seed, resume.pop(seed["id"]))
                running[ref] = seed["id"]
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                running.pop(ref)
                ray.get(ref)
                info["finished"] += 1
                if progress:
                    progress("personas", info["finished"], len(pending))
    finally:
        stop_fleet(fleet)
    return info


def run_realmem(cfg: RealMemSynthConfig, progress: Progress | None = None,
                log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or resume) every persona, then write stats.json / report.md."""
    from mnemoray.synth.realmem.report import write_report

    say = log or (lambda _: None)
    cfg, engine = resolve(cfg)
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    (Path(cfg.out) / "config.json").write_text(cfg.model_dump_json(indent=2), encoding="utf-8")
    seeds, errors = prepare_inputs(cfg)
    say(f"{len(seeds)} personas ({len(errors)} invalid records listed in the report)")
    started = time.perf_counter()
    with ray_session(cfg.ray):
        info = run_personas(cfg, engine, seeds, progress)
    wall = round(time.perf_counter() - started, 3)
    say(f"{info['finished']} of {info['pending']} pending personas finished in {wall} s")
    with open(Path(cfg.out) / "runs.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "wall_s": wall, **info}) + "\n")
    stats = write_report(cfg, len(seeds), errors)
    stats["this_run"] = info
    return stats
