"""Synthetic QA for MemBuilder's dense reward: generated once per session by an LLM, cached on disk.

Per session, `per_session` questions (default 5) in the mix of `mnemoray.rewards.qa.QA_MIX`
(50 % single-session, 30 % multi-session, 20 % temporal; 5 → 3 / 1 / 1). A session with
no earlier session cannot have multi-session questions: their share goes to
single-session. One engine call per (session, type) asks for exactly that many questions
(the schema pins the count); a call still invalid after the engine's re-asks fails its
session, which is then left out of the cache (counted, retried by the next run).

The cache is a JSONL file, one line per session, appended (and flushed) after every chunk
of sessions, so an interrupted preparation resumes where it stopped and a rerun reuses
every cached session without calling the engine:

    {"key": "<history>/<session>", "history_id": ..., "session_id": ..., "model": ...,
     "questions": [{"id": "qa-<hash>", "type": "temporal", "question": ..., "answer": ...}]}

Question ids are hashes of (history, session, type, index): the same session always gives
the same ids.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnemoray.ids import stable_id
from mnemoray.llm.structured import generate_structured
from mnemoray.llm.types import ChatRequest, Engine, SamplingParams
from mnemoray.loaders.errors import DatasetError
from mnemoray.memory.prompts import clamp_schema, fit, load_prompt
from mnemoray.rewards.qa import QA_MIX, QA_PER_SESSION, qa_mix

GENERATOR = "qa_generate"
RULES = {
    "single-session": "Answerable from this session alone: something the user said, did, likes or plans.",
    "multi-session": "Needs this session together with at least one earlier session: a change, an update, a "
                     "comparison or a count across sessions.",
    "temporal": "About when something happened or will happen; give the answer as an absolute date or time span "
                "worked out from the session dates.",
}


@dataclass(frozen=True)
class QASynthSettings:
    per_session: int = QA_PER_SESSION
    mix: tuple[tuple[str, float], ...] = QA_MIX
    session_chars: int = 6000  # prompt budgets (each keeps its end)
    earlier_chars: int = 4000
    question_chars: int = 300
    answer_chars: int = 200
    max_tokens: int = 512
    temperature: float = 0.0
    seed: int | None = 0
    max_retries: int = 2
    chunk_sessions: int = 16  # sessions per engine batch (and per cache append)


@dataclass(frozen=True)
class SessionText:
    """What a session's questions are written from."""

    history_id: str
    session_id: str
    date: str | None
    text: str
    earlier: tuple[tuple[str | None, str], ...] = ()  # (date, transcript) of the history's earlier sessions

    @property
    def key(self) -> str:
        return f"{self.history_id}/{self.session_id}"


def session_plan(n: int, has_earlier: bool, mix: Sequence[tuple[str, float]] = QA_MIX) -> dict[str, int]:
    """Questions per type for one session (types with 0 questions left out)."""
    counts = qa_mix(n, mix)
    if not has_earlier and counts.get("multi-session"):
        counts["single-session"] = counts.get("single-session", 0) + counts.pop("multi-session")
    return {kind: count for kind, count in counts.items() if count > 0}


def question_id(history_id: str, session_id: str, kind: str, index: int) -> str:
    return f"qa-{stable_id(history_id, session_id, kind, index)}"


def earlier_text(session: SessionText, budget: int) -> str:
    lines = [f"[{date or 'unknown date'}] {text}" for date, text in session.earlier]
    return fit("\n\n".join(lines), budget) if lines else "(none)"


def generation_requests(session: SessionText, s: QASynthSettings) -> list[tuple[str, int, ChatRequest]]:
    """(type, count, request) for each question type of the session's plan."""
    spec = load_prompt("rewards", GENERATOR)
    out = []
    for kind, count in session_plan(s.per_session, bool(session.earlier), s.mix).items():
        if kind not in RULES:
            raise ValueError(f"no generation rule for question type {kind!r} (known: {sorted(RULES)})")
        schema = clamp_schema(spec.schema, max(s.question_chars, s.answer_chars), count)
        schema["properties"]["questions"]["minItems"] = count
        items = schema["properties"]["questions"]["items"]["properties"]
        items["question"]["maxLength"], items["answer"]["maxLength"] = s.question_chars, s.answer_chars
        messages = spec.messages(qtype=kind, rule=RULES[kind], earlier=earlier_text(session, s.earlier_chars),
                                 date=session.date or "unknown", session=fit(session.text, s.session_chars),
                                 count=count)
        out.append((kind, count, ChatRequest(
            messages=messages, json_schema=copy.deepcopy(schema), seed=s.seed,
            params=SamplingParams(temperature=s.temperature, max_tokens=s.max_tokens),
            metadata={"call": GENERATOR, "session": session.key, "type": kind})))
    return out


def read_questions(session: SessionText, kind: str, count: int, parsed: Any) -> list[dict[str, str]]:
    """The first `count` questions of a parsed reply, with ids; ValueError when there are fewer."""
    raw = parsed.get("questions") if isinstance(parsed, dict) else None
    good = [q for q in raw or [] if isinstance(q, dict) and isinstance(q.get("question"), str)
            and isinstance(q.get("answer"), str) and q["question"].strip() and q["answer"].strip()]
    if len(good) < count:
        raise ValueError(f"{kind}: {len(good)} usable questions, {count} asked")
    return [{"id": question_id(session.history_id, session.session_id, kind, i), "type": kind,
             "question": q["question"].strip(), "answer": q["answer"].strip()} for i, q in enumerate(good[:count])]


class QACache:
    """The JSONL cache of generated questions, keyed by "<history>/<session>"."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        self.entries: dict[str, dict[str, Any]] = {}
        if not self.path.exists():
            return
        lines = self.path.read_text(encoding="utf-8").split("\n")
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                key, questions = str(entry["key"]), entry["questions"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                if lineno == len(lines):  # the last line, cut short by an interrupted append: generated again
                    self.path.write_text("".join(f"{kept}\n" for kept in lines[:-1] if kept.strip()), "utf-8")
                    break
                raise DatasetError(self.path, f"line {lineno}", None,
                                   f"not a QA cache entry ({type(err).__name__}: {err})") from None
            if not isinstance(questions, list):
                raise DatasetError(self.path, f"line {lineno}", "questions", "must be a list")
            self.entries[key] = entry

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def questions(self, key: str) -> list[dict[str, str]]:
        return list(self.entries[key]["questions"]) if key in self.entries else []

    def add(self, entries: Iterable[dict[str, Any]]) -> None:
        entries = list(entries)
        if not entries:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            for entry in entries:
                f.write(json.dumps(entry, ensure_ascii=False) + "\n")
                self.entries[entry["key"]] = entry
            f.flush()


@dataclass
class SynthReport:
    cached: int = 0  # sessions found in the cache
    generated: int = 0  # sessions generated now
    failed: list[str] = field(default_factory=list)  # "<key>: <reason>" of sessions left without questions
    calls: int = 0


def synthesize_qa(engine: Engine, sessions: Sequence[SessionText], cache: QACache,
                  settings: QASynthSettings | None = None) -> SynthReport:
    """Questions for every session not yet in `cache` (generated in chunks, appended after each)."""
    s = settings or QASynthSettings()
    report = SynthReport()
    todo = []
    for session in sessions:
        if session.key in cache:
            report.cached += 1
        else:
            todo.append(session)
    model = getattr(engine, "model", None)
    for start in range(0, len(todo), max(1, s.chunk_sessions)):
        chunk = todo[start : start + s.chunk_sessions]
        plans = [generation_requests(session, s) for session in chunk]
        requests = [req for plan in plans for _, _, req in plan]
        report.calls += len(requests)
        results = iter(generate_structured(engine, requests, max_retries=s.max_retries) if requests else [])
        entries = []
        for session, plan in zip(chunk, plans, strict=True):
            questions, problems = [], []
            for kind, count, _ in plan:
                result = next(results)
                if not result.ok:
                    problems.append(f"{kind}: {result.error_kind}: {result.error}")
                    continue
                try:
                    questions += read_questions(session, kind, count, result.parsed)
                except ValueError as err:
                    problems.append(str(err))
            if problems or not questions:
                report.failed.append(f"{session.key}: {'; '.join(problems) or 'no questions planned'}")
                continue
            entries.append({"key": session.key, "history_id": session.history_id, "session_id": session.session_id,
                            "model": model, "questions": questions})
        cache.add(entries)
        report.generated += len(entries)
    return report


__all__ = ["GENERATOR", "QACache", "QASynthSettings", "SessionText", "SynthReport", "earlier_text",
           "generation_requests", "question_id", "read_questions", "session_plan", "synthesize_qa"]
