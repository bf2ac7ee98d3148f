"""One persona of RealMem-style synthesis as a state machine: it hands out the LLM requests it
needs next and takes their results back, so a scheduler can interleave the turns of many
personas in one engine fleet while each persona stays strictly sequential.

    m = PersonaMachine(persona, cfg, memory)
    requests = m.start()
    while requests:
        requests = m.feed(answer(requests))      # any engine, any transport
    m.drain()  -> (stage, outcome row) to write; m.public_history() -> RealMem's format

Inside, a generator walks the stages: outlines (all projects at once) -> events -> session
plans -> the timeline -> each session in order: the dialogue loop (user agent, assistant
agent with retrieved memory, goal evaluator every round), the time-control check
(regenerate, then reject), then the memory manager (the `realmem` framework: extraction and
dedup). The memory framework is synchronous; its calls reach the fleet through
`ReplayEngine`, which raises `NeedAnswers` for a call it has no answer for yet: the machine
restores the memory to its state before the step, yields those calls, and runs the step
again with the answers known (call ids hash their content, so the rerun asks the same).
Sentence-encoder work goes out the same way when the memory is built with `deferred=True`
(`replay.new_memory`): `ReplayEmbedder` raises `NeedVectors`, the machine yields an `EncodeRequest`
and takes the vectors back through `feed_vectors`, so a scheduler can encode the texts of many
personas in one batch (`mnemoray.synth.realmem.batching`) instead of one text per call.

Resume: `Resume` carries what a persona already has on disk (stage records, done ids, the
last memory checkpoint); done work is not redone, and sessions finished after the checkpoint
are re-ingested into memory from their stored turns.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mnemoray.config.synth import RealMemSynthConfig
from mnemoray.llm.types import ChatRequest, ChatResult
from mnemoray.memory.prompts import fit
from mnemoray.records import Persona, Session, Turn, make_turn_id
from mnemoray.synth.realmem import plan as PL
from mnemoray.synth.realmem import prompts as P
from mnemoray.synth.realmem.public import ExtractedMemory, PublicHistory, PublicMetadata, PublicSession, PublicTurn
from mnemoray.synth.realmem.replay import NeedAnswers, NeedVectors, ReplayEmbedder, ReplayEngine
from mnemoray.synth.realmem.timecheck import time_problems

STAGES = ("outlines", "events", "session_plans", "memory", "sessions", "histories")
Answers = dict[str, ChatResult]


@dataclass(frozen=True)
class EncodeRequest:
    """Texts the machine needs sentence vectors for; answer with `feed_vectors` (one row each)."""

    texts: list[str]


Next = list[ChatRequest] | EncodeRequest
Flow = Generator[Next, Any, Any]


@dataclass
class Resume:
    """What one persona already has on disk."""

    done: dict[str, set[str]] = field(default_factory=dict)  # stage -> input ids done
    kept: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # stage -> kept records
    checkpoint: dict[str, Any] | None = None  # {"covered": [session uuids], "memory": snapshot}


def reject_row(record_id: str, persona_id: str, reason: str, detail: str = "", raw: str = "") -> dict[str, Any]:
    return {"id": record_id, "persona_id": persona_id, "reason": reason, "detail": detail, "raw": raw}


def category_of(items: list[Any]) -> str:
    """RealMem's query category from the kinds of memory the answer used."""
    types = {it.metadata.get("type") for it in items}
    if "Schedule" in types:
        return "Temporal-reasoning"
    if any(len(it.metadata.get("sessions", [])) > 1 for it in items):
        return "Dynamic Updating"
    if types == {"Static"}:
        return "Implicit Preference"
    return "Dynamic Incremental"


class PersonaMachine:
    def __init__(self, persona: dict[str, Any], cfg: RealMemSynthConfig, memory: Any,
                 resume: Resume | None = None, count_tokens: Callable[[str], int] | None = None):
        self.persona = persona
        self.pid = persona["id"]
        self.cfg = cfg
        self.memory = memory
        self.replay = memory.model.engine
        if not isinstance(self.replay, ReplayEngine):
            raise TypeError("the machine's memory framework must be built with a ReplayEngine")
        encoder = getattr(getattr(memory, "cache", None), "embedder", None)
        self.vectors = encoder if isinstance(encoder, ReplayEmbedder) else None
        self.resume = resume or Resume()
        self.count_tokens = count_tokens or (lambda text: len(text.split()))
        self.outputs: list[tuple[str, dict[str, Any]]] = []
        self.finished = False
        self.covered: list[str] = []
        self.sessions: list[dict[str, Any]] = []  # kept session records, timeline order
        self.stats = collections.Counter()
        self._usage = collections.Counter()
        self._flow = self._run()
        self._pending: list[ChatRequest] = []

    # -- driving ---------------------------------------------------------------------------------

    def start(self) -> Next:
        return self._advance(None)

    def feed_vectors(self, vectors: np.ndarray) -> Next:
        """Answer an `EncodeRequest`: one vector per text, in its order."""
        if not isinstance(self._pending, EncodeRequest) or len(vectors) != len(self._pending.texts):
            raise ValueError(f"feed_vectors answers an EncodeRequest with one vector per text, got {len(vectors)} "
                             f"for {self._pending!r}")
        return self._advance(np.asarray(vectors))

    def feed(self, results: list[ChatResult]) -> Next:
        by_id = {r.id: r for r in results}
        for r in results:
            self._usage["calls"] += 1
            self._usage["attempts"] += r.attempts
            self._usage["prompt_tokens"] += r.usage.prompt_tokens
            self._usage["completion_tokens"] += r.usage.completion_tokens
            self._usage["latency_us"] += int(r.latency_s * 1e6)
        return self._advance(by_id)

    def _advance(self, answers: Any) -> Next:
        try:
            self._pending = next(self._flow) if answers is None else self._flow.send(answers)
        except StopIteration:
            self.finished, self._pending = True, []
        return self._pending

    def drain(self) -> list[tuple[str, dict[str, Any]]]:
        out, self.outputs = self.outputs, []
        return out

    def checkpoint(self) -> dict[str, Any]:
        return {"covered": list(self.covered), "memory": self.memory.snapshot()}

    def _emit(self, stage: str, input_id: str, kept: list[dict[str, Any]] = (),
              rejects: list[dict[str, Any]] = ()) -> None:
        u, self._usage = self._usage, collections.Counter()
        self.outputs.append((stage, {
            "input_id": input_id, "persona_id": self.pid, "kept": json.dumps(list(kept), ensure_ascii=False),
            "rejects": json.dumps(list(rejects), ensure_ascii=False), "calls": u["calls"],
            "attempts": u["attempts"], "prompt_tokens": u["prompt_tokens"],
            "completion_tokens": u["completion_tokens"], "latency_s": u["latency_us"] / 1e6}))

    def _done(self, stage: str) -> set[str]:
        return self.resume.done.get(stage, set())

    def _kept(self, stage: str) -> list[dict[str, Any]]:
        return self.resume.kept.get(stage, [])

    # -- the stages ------------------------------------------------------------------------------

    def _run(self) -> Flow:
        outlines = yield from self._outlines()
        events = yield from self._events(outlines)
        plans = yield from self._plans(outlines, events)
        yield from self._sessions(outlines, events, plans)
        self._finish()

    def _outlines(self) -> Flow:
        goals = self.persona["goals"]
        todo = [(n, g) for n, g in enumerate(goals) if g["id"] not in self._done("outlines")]
        if todo:
            requests = [PL.build_outline(self.persona, g, self.cfg) for _, g in todo]
            answers = yield requests
            for (n, g), req in zip(todo, requests):
                result = answers.get(req.id)
                try:
                    self._emit("outlines", g["id"], kept=[PL.parse_outline(self.persona, g, n, result, self.cfg)])
                except PL.Invalid as bad:
                    self._emit("outlines", g["id"], rejects=[reject_row(PL.project_id(self.pid, g), self.pid,
                                                                        bad.reason, bad.detail, _raw(result))])
        kept = {r["id"]: r for r in self._kept("outlines")}
        kept.update({r["id"]: r for s, row in self.outputs if s == "outlines" for r in json.loads(row["kept"])})
        return sorted(kept.values(), key=lambda r: r["number"])

    def _events(self, outlines: list[dict[str, Any]]) -> Flow:
        todo = [o for o in outlines if o["id"] not in self._done("events")]
        if todo:
            requests = [PL.build_events(self.persona, o, self.cfg) for o in todo]
            answers = yield requests
            for o, req in zip(todo, requests):
                result = answers.get(req.id)
                try:
                    self._emit("events", o["id"], kept=[PL.parse_events(o, result, self.cfg)])
                except PL.Invalid as bad:
                    self._emit("events", o["id"], rejects=[reject_row(f"evs-{o['id']}", self.pid, bad.reason,
                                                                      bad.detail, _raw(result))])
        kept = {r["project_id"]: r for r in self._kept("events")}
        kept.update({r["project_id"]: r for s, row in self.outputs if s == "events" for r in json.loads(row["kept"])})
        return kept

    def _plans(self, outlines: list[dict[str, Any]], events: dict[str, dict[str, Any]]) -> Flow:
        todo = [(o, e) for o in outlines if o["id"] in events for e in events[o["id"]]["events"]
                if PL.event_key(o["id"], e["index"]) not in self._done("session_plans")]
        if todo:
            requests = [PL.build_summaries(self.persona, o, e, self.cfg) for o, e in todo]
            answers = yield requests
            for (o, e), req in zip(todo, requests):
                key, result = PL.event_key(o["id"], e["index"]), answers.get(req.id)
                try:
                    self._emit("session_plans", key, kept=PL.parse_summaries(o, e, result, self.cfg))
                except PL.Invalid as bad:
                    self._emit("session_plans", key, rejects=[reject_row(key, self.pid, bad.reason, bad.detail,
                                                                         _raw(result))])
        plans = {r["id"]: r for r in self._kept("session_plans")}
        plans.update({r["id"]: r for s, row in self.outputs if s == "session_plans" for r in json.loads(row["kept"])})
        return list(plans.values())

    # -- sessions --------------------------------------------------------------------------------

    def _sessions(self, outlines: list[dict[str, Any]], events: dict[str, dict[str, Any]],
                  plans: list[dict[str, Any]]) -> Flow:
        cfg = self.cfg
        projects = {o["id"]: o for o in outlines}
        all_events = [{**e, "project_id": pid} for pid, rec in events.items() for e in rec["events"]]
        done_kept = {r["id"]: r for r in self._kept("sessions")}
        done_any = self._done("sessions")
        if self.resume.checkpoint:
            self.memory.restore(self.resume.checkpoint["memory"])
            self.covered = list(self.resume.checkpoint["covered"])
        tokens = 0
        earlier: list[str] = []
        for plan in PL.timeline(plans, cfg.plan.cooldown):
            uuid = plan["id"]
            if uuid in done_kept:
                record = done_kept[uuid]
                if uuid not in self.covered:  # finished after the last checkpoint: re-ingest its turns
                    yield from self._remember(plan, record["public"], projects[plan["project_id"]])
                self.sessions.append(record)
                earlier.append(uuid)
                tokens += record["tokens"]
                continue
            if uuid in done_any:
                continue  # rejected earlier
            if tokens >= cfg.target_tokens:
                self.stats["skipped_target_reached"] += 1
                continue
            record = yield from self._session(plan, projects[plan["project_id"]], all_events, plans, earlier)
            if record is None:
                continue
            self.sessions.append(record)
            earlier.append(uuid)
            tokens += record["tokens"]

    def _known(self, plan: dict[str, Any], plans: list[dict[str, Any]], all_events: list[dict[str, Any]]) -> str:
        """What the user agent may know: this project's events and session plans up to the session's date."""
        day = plan["day"]
        lines = [f"- {e['date']} ({e['state']}): {e['name']}. {e['detail']}" for e in all_events
                 if e["project_id"] == plan["project_id"] and e["date"] <= day]
        lines += [f"- earlier conversation: {p['summary']}" for p in plans
                  if p["project_id"] == plan["project_id"] and p["date"] <= day
                  and (p["event_index"], p["session_index"]) < (plan["event_index"], plan["session_index"])]
        return fit("\n".join(lines) or "(nothing yet)", self.cfg.dialogue.transcript_chars)

    def _session(self, plan: dict[str, Any], project: dict[str, Any], all_events: list[dict[str, Any]],
                 plans: list[dict[str, Any]], earlier: list[str]) -> Flow:
        cfg = self.cfg.dialogue
        uuid = plan["id"]
        flagged: list[tuple[str, str]] = []
        for attempt in range(cfg.regenerate + 1):
            try:
                turns, end, progress = yield from self._dialogue(plan, project, attempt, all_events, plans)
            except PL.Invalid as bad:
                self.stats["rejected_sessions"] += 1
                self._emit("sessions", uuid, rejects=[reject_row(uuid, self.pid, bad.reason, bad.detail,
                                                                 getattr(bad, "raw", ""))])
                return None
            problems = time_problems(turns, plan["day"], all_events, set(earlier), cfg.leak_min_overlap)
            if not problems:
                break
            flagged.append(problems[0])
            self.stats[f"flagged_{problems[0][0]}"] += 1
        else:
            reason, detail = flagged[-1]
            self.stats["rejected_sessions"] += 1
            self._emit("sessions", uuid, rejects=[reject_row(
                uuid, self.pid, reason, f"{detail} (after {cfg.regenerate} regeneration(s))",
                json.dumps(turns, ensure_ascii=False))])
            return None
        public = {"session_identifier": plan["identifier"], "session_uuid": uuid,
                  "current_time": plan["current_time"], "dialogue_turns": turns, "extracted_memory": []}
        dialogue_usage, self._usage = self._usage, collections.Counter()  # the memory row counts its own calls
        public["extracted_memory"] = yield from self._remember(plan, public, project)
        self._usage += dialogue_usage
        record = {"id": uuid, "persona_id": self.pid, "project_id": plan["project_id"], "order": plan["order"],
                  "day": plan["day"], "public": public, "turns": len(turns), "end_reason": end,
                  "progress": progress, "attempts": attempt + 1, "regenerated_for": [r for r, _ in flagged],
                  "queries": sum(1 for t in turns if t["is_query"]),
                  "tokens": self.count_tokens("\n".join(t["content"] for t in turns))}
        self._emit("sessions", uuid, kept=[record])
        return record

    def _dialogue(self, plan: dict[str, Any], project: dict[str, Any], attempt: int,
                  all_events: list[dict[str, Any]], plans: list[dict[str, Any]]) -> Flow:
        """One session's turns: user, assistant (with memory), evaluator, until the goal or max_turns."""
        cfg, dcfg = self.cfg, self.cfg.dialogue
        uuid = plan["id"]
        known = self._known(plan, plans, all_events)
        turns: list[dict[str, Any]] = []
        progress: list[int | None] = []
        topic = project["topic_name"].replace(" ", "_")
        for r in range(dcfg.max_turns // 2):
            key = f"{uuid}:{attempt}:{r}"
            transcript = fit(_transcript(turns), dcfg.transcript_chars) or "(the conversation starts now)"
            req = PL.make_request("sessions", f"user:{key}", cfg, P.USER, persona=self.persona["profile"],
                                  date=plan["current_time"], known=known, summary=plan["summary"],
                                  goal=plan["goal"], transcript=transcript)
            answers = yield [req]
            message = _field(answers.get(req.id), "message")
            hits = (yield from self._encoded(self.memory.retrieve, message, dcfg.memory_k)) if len(self.memory) else []
            handles = {f"M{i}": h.item for i, h in enumerate(hits, start=1)}
            memory_text = "\n".join(f"{h} [{it.timestamp or '?'}] {it.metadata.get('content', it.text)}"
                                    for h, it in handles.items()) or "(no memory yet)"
            transcript = fit(_transcript(turns + [{"speaker": "User", "content": message}]), dcfg.transcript_chars)
            req = PL.make_request("sessions", f"assistant:{key}", cfg, P.ASSISTANT,
                                  P.restrict_handles(P.ASSISTANT.schema, list(handles)), date=plan["current_time"],
                                  memory=memory_text, transcript=transcript)
            answers = yield [req]
            result = answers.get(req.id)
            reply = _field(result, "reply")
            used_handles = result.parsed.get("used_memory") or []
            used = [handles[h] for h in dict.fromkeys(used_handles) if isinstance(h, str) and h in handles]
            user = {"speaker": "User", "is_query": bool(used), "content": message, "query_id": None}
            assistant = {"speaker": "Assistant", "is_query": False, "content": reply, "query_id": None}
            if used:
                sessions = list(dict.fromkeys(s for it in used for s in it.metadata.get("sessions", [it.session_id])))
                user.update(query_id=f"Q-{uuid}-{len(turns) + 1:02d}", topic=topic, category_name=category_of(used),
                            session_type="multi_session" if len(sessions) > 1 else "single_session")
                assistant = {"speaker": "Assistant", "is_query": False, "content": reply,
                             "memory_used": [{"session_uuid": it.session_id,
                                              "content": it.metadata.get("content", it.text)} for it in used],
                             "memory_session_uuids": sessions, "query_id": None}
            turns += [user, assistant]
            transcript = fit(_transcript(turns), dcfg.transcript_chars)
            req = PL.make_request("sessions", f"evaluator:{key}", cfg, P.EVALUATOR, goal=plan["goal"],
                                  transcript=transcript)
            answers = yield [req]
            verdict = answers.get(req.id)
            if verdict is not None and verdict.ok and isinstance(verdict.parsed, dict):
                progress.append(verdict.parsed.get("progress"))
                reached = verdict.parsed.get("goal_reached") is True
            else:  # a failed evaluation does not end the session; the turn limit still does
                self.stats["evaluator_failures"] += 1
                progress.append(None)
                reached = False
            if reached and len(turns) >= dcfg.min_turns:
                return turns, "goal_reached", progress
        return turns, "max_turns", progress

    # -- sentence vectors ------------------------------------------------------------------------

    def _take_vectors(self, need: NeedVectors) -> Flow:
        vectors = yield EncodeRequest(list(need.texts))
        self.vectors.known.update(zip(need.texts, vectors))

    def _encoded(self, step: Callable[..., Any], *args: Any) -> Flow:
        """Run a memory step that has no side effects before its encodes, asking for vectors until it can."""
        while True:
            try:
                out = step(*args)
            except NeedVectors as need:
                yield from self._take_vectors(need)
                continue
            if self.vectors is not None:
                self.vectors.known.clear()
            return out

    # -- memory manager --------------------------------------------------------------------------

    def _remember(self, plan: dict[str, Any], public: dict[str, Any], project: dict[str, Any]) -> Flow:
        """Extraction + dedup of one session through the realmem framework; returns extracted_memory."""
        uuid = plan["id"]
        turns = public["dialogue_turns"]
        session = Session(id=uuid, timestamp=plan["day"], turns=[
            Turn(id=make_turn_id(uuid, i), speaker=t["speaker"].lower(), text=t["content"], index=i)
            for i, t in enumerate(turns)])
        persona = Persona(id=self.pid, name=self.persona["name"], description=self.persona["profile"])
        before = self.memory.snapshot()
        failures: list[dict[str, Any]] = []
        while True:
            self.memory.restore(before)
            try:
                pending = self.memory.extract(session, persona)
                ops = self.memory.dedup(session, pending)
                break
            except NeedVectors as need:
                yield from self._take_vectors(need)
                continue
            except NeedAnswers as need:
                asked = [r.model_copy(update={"metadata": {**r.metadata, "stage": "memory"}}) for r in need.requests]
                answers = yield asked
                for r in asked:
                    result = answers.get(r.id) or ChatResult(id=r.id, error="no answer came back", error_kind="missing")
                    self.replay.known[r.id] = result
                    if not result.ok:
                        failures.append(reject_row(f"mem-{uuid}", self.pid, f"llm_{result.error_kind or 'error'}",
                                                   f"{r.metadata.get('call', 'memory')}: {result.error}", result.text))
        for r in list(self.replay.known):  # answers are only needed inside one step
            del self.replay.known[r]
        if self.vectors is not None:  # the memory's own cache keeps what it encoded
            self.vectors.known.clear()
        index = {make_turn_id(uuid, i): i for i in range(len(turns))}
        prefix, tail = plan["identifier"].split(":", 1) if ":" in plan["identifier"] else (plan["identifier"], "")
        extracted = []
        for n, p in enumerate(pending, start=1):
            first = min((index[t] for t in p.prov.turn_ids if t in index), default=0)
            extracted.append(ExtractedMemory(
                index=f"{prefix}-DM-{tail}-{n:02d}", type=p.point.type, content=p.point.content,
                source_turn=first + 1, source_content_snapshot=turns[first]["content"] if turns else "",
                source_role_snapshot=turns[first]["speaker"] if turns else "", session_uuid=uuid,
            ).model_dump(mode="json"))
        if uuid not in self._done("memory"):
            counts = collections.Counter(op.op for op in ops)
            self._emit("memory", uuid, kept=[{"id": f"mem-{uuid}", "persona_id": self.pid, "session_uuid": uuid,
                                              "points": len(pending), "ops": dict(counts),
                                              "store_size": len(self.memory),
                                              "tags": dict(collections.Counter(p.point.tag for p in pending))}],
                       rejects=failures)
        self.covered.append(uuid)
        return extracted

    # -- the history -----------------------------------------------------------------------------

    def public_history(self) -> PublicHistory:
        sessions = sorted(self.sessions, key=lambda r: r["order"])
        return PublicHistory(
            metadata=PublicMetadata(person_name=self.persona.get("file_stem") or self.persona["name"],
                                    total_sessions=len(sessions), total_tokens=sum(r["tokens"] for r in sessions)),
            dialogues=[PublicSession(
                session_identifier=r["public"]["session_identifier"], session_uuid=r["public"]["session_uuid"],
                current_time=r["public"]["current_time"],
                dialogue_turns=[PublicTurn.model_validate(t) for t in r["public"]["dialogue_turns"]],
                extracted_memory=[ExtractedMemory.model_validate(m) for m in r["public"]["extracted_memory"]])
                for r in sessions])

    def _finish(self) -> None:
        sessions = self.sessions
        rejected = len(self._done("sessions") - {r["id"] for r in sessions}) + self.stats["rejected_sessions"]
        self._emit("histories", self.pid, kept=[{
            "id": f"hist-{self.pid}", "persona_id": self.pid, "name": self.persona["name"],
            "file_stem": self.persona.get("file_stem") or self.persona["name"], "sessions": len(sessions),
            "tokens": sum(r["tokens"] for r in sessions), "queries": sum(r["queries"] for r in sessions),
            "rejected_sessions": rejected, "skipped_sessions": self.stats["skipped_target_reached"],
            "target_tokens": self.cfg.target_tokens}])


def _raw(result: ChatResult | None) -> str:
    return result.text if result is not None else ""


def _field(result: ChatResult | None, name: str) -> str:
    try:
        parsed = PL.parsed_of(result)
        value = parsed.get(name)
        if not isinstance(value, str) or not value.strip():
            raise PL.Invalid("empty_field", f"{name} is missing or empty")
    except PL.Invalid as bad:
        bad.raw = _raw(result)
        raise
    return value.strip()


def _transcript(turns: list[dict[str, Any]]) -> str:
    return "\n".join(f"{t['speaker']}: {t['content']}" for t in turns)


def drive(machine: PersonaMachine, engine: Any, max_retries: int = 1) -> PersonaMachine:
    """Run one machine to the end against a local engine (tests, one-off runs; no Ray)."""
    from mnemoray.llm.structured import generate_structured

    requests = machine.start()
    while requests:
        if isinstance(requests, EncodeRequest):
            requests = machine.feed_vectors(machine.vectors.embedder.encode(requests.texts))
        else:
            requests = machine.feed(generate_structured(engine, requests, max_retries=max_retries))
    return machine
