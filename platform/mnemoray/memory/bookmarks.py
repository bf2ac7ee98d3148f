"""BOOKMARKS: question-answer bookmarks, reused across steps and synchronized lazily.

A bookmark is `{query, tag: concept|state|behavioral, answer, position}`: the answer to a
question as of story position `position` (the index of the last step it was brought up to
date with; -1 before its first synchronization). The story is read in steps of
`chunk_turns` turns. At each step:

1. propose — the memory model, grounded on the profile (persona) and the most recently
   updated bookmarks, asks the questions worth bookmarking now (with keywords for concepts);
2. match — each question reuses the existing bookmark of the same tag with the highest
   token overlap (Jaccard over content words) when it is ≥ `reuse_overlap`, starts a new
   bookmark when it is ≤ `new_overlap`, and only in between asks the model a yes/no
   question (one batched call for all close calls of the step);
3. synchronize — every touched bookmark (reused or new) is brought from its position to
   the current step, reading only the steps it has not read (new ones from the start):
   - state: the unread steps newest first, one model call per step (batched across
     bookmarks by rounds); the first step that settles the question resets the answer;
   - concept: plain code collects the sentences that mention a keyword, turn by turn;
   - behavioral: the model filters each unread step's lines (one call per step, all
     batched); the chosen lines are appended, action by action.
   Model-based synchronization reads at most the `max_sync_steps` most recent unread steps.
   Bookmarks nobody asks about are not touched (passive updating).

Answers are capped at `answer_chars` (concept/behavioral keep their newest entries). A
bookmark's provenance is the turns of the step that proposed it plus the turns its current
answer rests on; its session is the last session it was synchronized in. Retrieval ranks
bookmarks by embedding of question + answer. The raw steps are kept in the state, since a
later synchronization has to read them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from mnemoray.config import MemoryConfig
from mnemoray.memory.base import MemoryFramework
from mnemoray.memory.llm_calls import CallSpec, EmbeddingRetrieval, LLMMemoryFramework
from mnemoray.memory.ops import OpError, normalize_text, ordered_union
from mnemoray.memory.prompts import fit, load_prompt
from mnemoray.memory.trajectory import TrajectoryLog
from mnemoray.memory.transcript import chunk_turns, persona_text
from mnemoray.records import MemoryItem, MemoryOp, Persona, Session, content_id

BOOKMARK_TAGS = ("concept", "state", "behavioral")
STOPWORDS = frozenset(
    "a an the of to in on at for by with from and or but is are was were be been being do does did has have had "
    "what which who whom whose when where why how that this these those it its as about into than then so if not "
    "no yes can could would should will shall may might must their there they them he she his her him you your "
    "i me my we our us any some all current currently now".split()
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def content_tokens(text: str) -> set[str]:
    return {t for t in normalize_text(text).split() if t not in STOPWORDS}


def token_overlap(a: str, b: str) -> float:
    """Jaccard overlap of the content words of two questions (0 when either has none)."""
    x, y = content_tokens(a), content_tokens(b)
    return len(x & y) / len(x | y) if x and y else 0.0


@dataclass(frozen=True)
class Question:
    tag: str
    query: str
    keywords: tuple[str, ...] = ()


def parse_questions(value: Any) -> tuple[list[Question], list[OpError]]:
    """`{"questions": [{"tag", "query", "keywords"}]}` → questions (repeats folded) plus typed errors."""
    raw = value.get("questions") if isinstance(value, dict) else None
    if not isinstance(raw, list):
        return [], [OpError("the answer has no 'questions' list")]
    out: list[Question] = []
    seen: set[tuple[str, str]] = set()
    errors: list[OpError] = []
    for i, q in enumerate(raw):
        if not isinstance(q, dict):
            errors.append(OpError("question is not an object", i))
            continue
        tag = q.get("tag").strip().lower() if isinstance(q.get("tag"), str) else None
        query, keywords = q.get("query"), q.get("keywords", [])
        if isinstance(keywords, str):
            keywords = [keywords]
        if tag not in BOOKMARK_TAGS:
            errors.append(OpError(f"tag {q.get('tag')!r} is not one of {list(BOOKMARK_TAGS)}", i))
        elif not isinstance(query, str) or not normalize_text(query):
            errors.append(OpError("question without text", i))
        elif keywords is not None and not (isinstance(keywords, list) and all(isinstance(k, str) for k in keywords)):
            errors.append(OpError("'keywords' must be a list of strings", i))
        elif (tag, normalize_text(query)) in seen:
            errors.append(OpError("the same question twice", i))
        else:
            seen.add((tag, normalize_text(query)))
            kws = tuple(dict.fromkeys(k.strip() for k in keywords or [] if len(k.strip()) >= 2))
            out.append(Question(tag, query.strip(), kws))
    return out, errors


def parse_same(value: Any) -> tuple[bool | None, OpError | None]:
    same = value.get("same") if isinstance(value, dict) else None
    if not isinstance(same, bool):
        return None, OpError("the answer has no boolean 'same'")
    return same, None


def parse_state(value: Any) -> tuple[str | None, OpError | None]:
    """`{"found", "answer"}` → the new answer, None when the piece does not settle it, or an error."""
    if not isinstance(value, dict) or not isinstance(value.get("found"), bool):
        return None, OpError("the answer has no boolean 'found'")
    answer = value.get("answer", "")
    if not isinstance(answer, str):
        return None, OpError("'answer' is not a string")
    if not value["found"]:
        return None, None
    if not answer.strip():
        return None, OpError("found without an answer")
    return answer.strip(), None


def parse_actions(value: Any, handles: Sequence[str]) -> tuple[list[str], list[OpError]]:
    """`{"actions": ["A1", ...]}` → the known handles in story order, plus errors for the rest."""
    raw = value.get("actions") if isinstance(value, dict) else None
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        return [], [OpError("the answer has no 'actions' list")]
    picked: set[str] = set()
    errors: list[OpError] = []
    for i, h in enumerate(raw):
        name = h.strip().upper() if isinstance(h, str) else None
        if name in handles:
            picked.add(name)
        else:
            errors.append(OpError(f"unknown action {h!r}", i))
    return [h for h in handles if h in picked], errors


def keyword_spans(text: str, keywords: Sequence[str], limit: int) -> str:
    """The sentences of `text` that mention a keyword (whole word, any case), cut to `limit` chars."""
    patterns = [re.compile(rf"(?<!\w){re.escape(k)}(?!\w)", re.IGNORECASE) for k in keywords if k.strip()]
    hits = [s.strip() for s in _SENTENCE.split(text) if any(p.search(s) for p in patterns)]
    span = " ... ".join(h for h in hits if h)
    return span[:limit].strip()


@dataclass
class Bookmark:
    id: str
    query: str
    tag: str
    answer: str = ""
    position: int = -1  # index of the last step the answer is synchronized to
    keywords: list[str] = field(default_factory=list)
    entries: list[list[str]] = field(default_factory=list)  # concept / behavioral: [turn id, text], oldest first
    origin_turns: list[str] = field(default_factory=list)  # turns of the step that proposed it
    answer_turns: list[str] = field(default_factory=list)  # state: turns of the step that set the answer
    sessions: list[str] = field(default_factory=list)
    session_id: str | None = None
    timestamp: str | None = None
    created: int = 0
    updated: int = 0

    def turn_ids(self) -> list[str]:
        return ordered_union(ordered_union(self.origin_turns, self.answer_turns), [t for t, _ in self.entries])

    def text(self) -> str:
        return f"{self.query}\n{self.answer or '(not known yet)'}"

    def item(self) -> MemoryItem:
        return MemoryItem(id=self.id, text=self.text(), kind="bookmark", session_id=self.session_id,
                          turn_ids=self.turn_ids(), timestamp=self.timestamp,
                          metadata={"tag": self.tag, "query": self.query, "answer": self.answer,
                                    "position": self.position, "keywords": list(self.keywords),
                                    "sessions": list(self.sessions)})


def fit_entries(entries: list[list[str]], limit: int) -> list[list[str]]:
    """The newest entries whose joined text fits `limit` chars (at least the newest one)."""
    kept: list[list[str]] = []
    used = 0
    for entry in reversed(entries):
        extra = len(entry[1]) + (3 if kept else 0)
        if kept and used + extra > limit:
            break
        kept.append(entry)
        used += extra
    kept.reverse()
    return kept


@dataclass(frozen=True)
class Match:
    question: Question
    bookmark: Bookmark | None  # the existing bookmark reused, None: start a new one
    how: str  # "overlap", "checked", "new"


class BookmarksMemory(EmbeddingRetrieval, LLMMemoryFramework, MemoryFramework):
    name = "bookmarks"

    def __init__(self, config: MemoryConfig, engine=None, embedder=None, log: TrajectoryLog | None = None,
                 max_retries: int = 2):
        super().__init__(config, engine, embedder, log, max_retries)
        self.cache = self.embedding_cache()
        self.bookmarks: dict[str, Bookmark] = {}
        self.steps: list[dict[str, Any]] = []  # the story read so far, one entry per step
        self.profile = "(no profile given)"

    def __len__(self) -> int:
        return len(self.bookmarks)

    def memory_items(self) -> list[MemoryItem]:
        return [b.item() for b in self.bookmarks.values()]

    # -- the story -------------------------------------------------------------------------------

    def _lines(self, step: dict[str, Any], prefix: str = "") -> tuple[list[str], str]:
        handles = [f"{prefix}{n}" for n in range(1, len(step["turns"]) + 1)] if prefix else []
        lines = [(f"{handles[i]}: " if prefix else "") + (f"{t['speaker']}: {t['text']}" if t["speaker"] else t["text"])
                 for i, t in enumerate(step["turns"])]
        return handles, "\n".join(lines)

    def _fields(self, step: dict[str, Any], chunk: str) -> dict[str, Any]:
        return {"profile": self.profile, "step": step["index"], "session": step["session_id"],
                "date": step["timestamp"] or "unknown", "chunk": chunk}

    # -- 1. propose ------------------------------------------------------------------------------

    def _recent(self) -> list[Bookmark]:
        n = self.settings.recent_bookmarks
        ordered = sorted(self.bookmarks.values(), key=lambda b: b.updated, reverse=True)
        return ordered[:n] if n else []

    def propose(self, step: dict[str, Any]) -> list[Question]:
        recent = self._recent()
        shown = "\n".join(f"- [{b.tag}] {b.query} -> {b.answer or '(not known yet)'}" for b in recent)
        shown = fit(shown, self.config.llm_call.prompt_memory_chars) or "(none yet)"
        _, chunk = self._lines(step)
        spec = CallSpec(
            load_prompt("bookmarks", "propose"),
            {**self._fields(step, chunk), "bookmarks": shown},
            step["session_id"],
            {"bookmarks": [{"id": b.id, "tag": b.tag, "query": b.query, "answer": b.answer} for b in recent]},
        )
        out = self.model.run([spec])[0]
        if not out.ok:
            return []
        questions, errors = parse_questions(out.parsed)
        self._note_errors(step["session_id"], "propose", errors)
        return questions

    # -- 2. match --------------------------------------------------------------------------------

    def match(self, step: dict[str, Any], questions: Sequence[Question]) -> list[Match]:
        settled: dict[int, Match] = {}
        close: list[tuple[int, Bookmark]] = []
        for i, q in enumerate(questions):
            same_tag = [b for b in self.bookmarks.values() if b.tag == q.tag]  # oldest first
            best = next((b for b in same_tag if normalize_text(b.query) == normalize_text(q.query)), None)
            score = 1.0 if best is not None else 0.0
            for b in same_tag if best is None else []:  # ties keep the older bookmark
                s = token_overlap(q.query, b.query)
                if s > score:
                    best, score = b, s
            if best is not None and score >= self.settings.reuse_overlap:
                settled[i] = Match(q, best, "overlap")
            elif best is None or score <= self.settings.new_overlap:
                settled[i] = Match(q, None, "new")
            else:
                close.append((i, best))
        prompt = load_prompt("bookmarks", "match")
        specs = [CallSpec(prompt, {"tag": questions[i].tag, "stored": b.query, "new": questions[i].query},
                          step["session_id"], {"bookmark": {"id": b.id, "tag": b.tag, "query": b.query}})
                 for i, b in close]
        for (i, b), out in zip(close, self.model.run(specs)):
            same, error = parse_same(out.parsed) if out.ok else (None, None)
            if error is not None:
                self._note_errors(step["session_id"], "match", [error])
            if same is None:
                self.log.note("match_undecided")  # undecided: a new bookmark loses nothing
            settled[i] = Match(questions[i], b, "checked") if same else Match(questions[i], None, "new")
        return [settled[i] for i in range(len(questions))]

    # -- 3. synchronize --------------------------------------------------------------------------

    def _unread(self, bookmark: Bookmark, upto: int, cap: int | None) -> list[dict[str, Any]]:
        steps = self.steps[bookmark.position + 1: upto + 1]
        return steps[-cap:] if cap else steps

    def _sync_concept(self, bookmark: Bookmark, upto: int) -> None:
        keywords = bookmark.keywords or sorted(content_tokens(bookmark.query))
        for step in self._unread(bookmark, upto, None):
            for t in step["turns"]:
                span = keyword_spans(t["text"], keywords, self.settings.span_chars)
                if span:
                    bookmark.entries.append([t["id"], f"{t['speaker']}: {span}" if t["speaker"] else span])

    def _sync_behavioral(self, todo: list[Bookmark], upto: int) -> None:
        prompt = load_prompt("bookmarks", "behavioral")
        specs, jobs = [], []
        for b in todo:
            for step in self._unread(b, upto, self.settings.max_sync_steps):
                handles, chunk = self._lines(step, "A")
                specs.append(CallSpec(prompt, {**self._fields(step, chunk), "query": b.query}, step["session_id"],
                                      {"bookmark": {"id": b.id, "query": b.query, "answer": b.answer}},
                                      id_fields={"actions": handles}))
                jobs.append((b, step, handles))
        for (b, step, handles), out in zip(jobs, self.model.run(specs)):
            if not out.ok:
                continue
            picked, errors = parse_actions(out.parsed, handles)
            self._note_errors(step["session_id"], "behavioral", errors)
            for h in picked:
                t = step["turns"][handles.index(h)]
                b.entries.append([t["id"], f"{t['speaker']}: {t['text']}" if t["speaker"] else t["text"]])

    def _sync_state(self, todo: list[Bookmark], upto: int) -> None:
        prompt = load_prompt("bookmarks", "state")
        pending = {b.id: list(reversed(self._unread(b, upto, self.settings.max_sync_steps))) for b in todo}
        active = [b for b in todo if pending[b.id]]
        depth = 0
        while active:  # round r reads the r-th newest unread step of every bookmark still open
            specs = []
            for b in active:
                step = pending[b.id][depth]
                _, chunk = self._lines(step)
                specs.append(
                    CallSpec(
                        prompt,
                        {**self._fields(step, chunk), "query": b.query, "answer": b.answer or "(not known yet)"},
                        step["session_id"],
                        {"bookmark": {"id": b.id, "query": b.query, "answer": b.answer}},
                    )
                )
            still = []
            for b, out in zip(active, self.model.run(specs)):
                step = pending[b.id][depth]
                answer, error = parse_state(out.parsed) if out.ok else (None, None)
                if error is not None:
                    self._note_errors(step["session_id"], "state", [error])
                if answer is not None:  # reset: the newest settling step gives the state
                    b.answer = answer[: self.settings.answer_chars].strip()
                    b.answer_turns = [t["id"] for t in step["turns"]]
                    b.sessions = ordered_union(b.sessions, [step["session_id"]])
                elif depth + 1 < len(pending[b.id]):
                    still.append(b)
            active = still
            depth += 1

    def synchronize(self, touched: list[Bookmark], step: dict[str, Any]) -> None:
        upto = step["index"]
        for b in touched:
            if b.tag == "concept":
                self._sync_concept(b, upto)
        self._sync_behavioral([b for b in touched if b.tag == "behavioral"], upto)
        self._sync_state([b for b in touched if b.tag == "state"], upto)
        for b in touched:
            if b.tag != "state":
                b.entries = fit_entries(b.entries, self.settings.answer_chars)
                b.answer = " | ".join(text for _, text in b.entries)[: self.settings.answer_chars]
            b.position = upto
            b.updated = upto
            b.session_id = step["session_id"]
            b.timestamp = step["timestamp"]
            b.sessions = ordered_union(b.sessions, [step["session_id"]])

    # -- one step ----------------------------------------------------------------------------------

    def _new_bookmark(self, q: Question, step: dict[str, Any]) -> Bookmark:
        bid = content_id("bookmark", q.tag, normalize_text(q.query), step["session_id"], step["index"])
        return Bookmark(id=bid, query=q.query, tag=q.tag, keywords=list(q.keywords),
                        origin_turns=[t["id"] for t in step["turns"]], sessions=[step["session_id"]],
                        session_id=step["session_id"], timestamp=step["timestamp"], created=step["index"],
                        updated=step["index"])

    def step(self, step: dict[str, Any]) -> list[MemoryOp]:
        matches = self.match(step, self.propose(step))
        touched: dict[str, Bookmark] = {}
        created: set[str] = set()
        for m in matches:
            if m.bookmark is not None:
                b = m.bookmark
                b.keywords = list(dict.fromkeys([*b.keywords, *m.question.keywords]))
                self.log.note(f"bookmarks_reused.{m.how}")
            else:
                b = self._new_bookmark(m.question, step)
                if b.id in self.bookmarks or b.id in touched:
                    continue
                created.add(b.id)
            touched.setdefault(b.id, b)
        self.synchronize(list(touched.values()), step)
        ops = []
        for bid, b in touched.items():
            self.bookmarks[bid] = b  # new ones join at the end (oldest first)
            ops.append(MemoryOp(op="ADD" if bid in created else "UPDATE", item=b.item(),
                                target_id=None if bid in created else bid, session_id=step["session_id"],
                                reason=f"{b.tag} bookmark synchronized to step {b.position}"))
        return ops

    def ingest(self, session: Session, persona: Persona | None = None) -> list[MemoryOp]:
        if persona is not None or not self.steps:
            self.profile = persona_text(persona)
        ops: list[MemoryOp] = []
        for chunk in chunk_turns(session, self.settings.chunk_turns):
            step = {"index": len(self.steps), "session_id": session.id, "timestamp": session.timestamp,
                    "turns": [{"id": t.id, "speaker": t.speaker, "text": t.text} for t in chunk]}
            self.steps.append(step)
            ops.extend(self.step(step))
        return ops

    # -- state -----------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {"name": self.name, "config": self.config.model_dump(mode="json"),
                "bookmarks": [asdict(b) for b in self.bookmarks.values()], "steps": [dict(s) for s in self.steps],
                "profile": self.profile, "op_errors": list(self.op_errors), "stats": self.log.stats()}

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"snapshot is of '{state.get('name')}', not '{self.name}'")
        bookmarks = [Bookmark(**b) for b in state["bookmarks"]]
        self.bookmarks = {b.id: b for b in bookmarks}
        self.steps = [dict(s) for s in state["steps"]]
        self.profile = state.get("profile", "(no profile given)")
        self.op_errors = list(state.get("op_errors", []))
