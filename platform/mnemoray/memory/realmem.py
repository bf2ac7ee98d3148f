"""RealMem extraction: typed memory points per session, then a batched dedup pass.

After each session the memory model lists memory points `{type: Dynamic|Static|Schedule,
tag: Confirmed|Draft, content, turns}` holding only the state the session ended in (an
option dropped along the way is not written). Plain code then places each point:

- a point whose text (normalised) is already stored only widens that item's provenance;
- a point with no stored point above `dedup_min_similarity` (embedding cosine) is added;
- the other points go, in batches of `dedup_batch`, to one dedup call each, shown with
  their `dedup_candidates` most similar stored points; per point the model answers keep,
  discard (a named stored point already says it: that point's provenance is widened) or
  merge into a named stored point (that point is REPLACED by the merged text, which
  inherits the provenance of both — no stale copy is left). A point with no decision, or
  a batch whose call failed, is kept: nothing is lost to a bad answer.

Items carry provenance: the session, the turns the point cites (all turns of the session
when it cites none that exist), every session that contributed. Retrieval ranks the
points by embedding.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mnemoray.config import MemoryConfig
from mnemoray.memory.base import MemoryFramework
from mnemoray.memory.llm_calls import CallSpec, EmbeddingRetrieval, LLMMemoryFramework
from mnemoray.memory.ops import ItemStore, OpError, Provenance, normalize_text, ordered_union, widen
from mnemoray.memory.prompts import PromptSpec, load_prompt
from mnemoray.memory.ranking import rank_items
from mnemoray.memory.trajectory import TrajectoryLog
from mnemoray.memory.transcript import persona_text, spoken_turns, turn_line
from mnemoray.records import MemoryItem, MemoryOp, Persona, Session, Turn

POINT_TYPES = ("Dynamic", "Static", "Schedule")
POINT_TAGS = ("Confirmed", "Draft")
DEDUP_ACTIONS = ("keep", "discard", "merge")


@dataclass(frozen=True)
class MemoryPoint:
    type: str
    tag: str
    content: str
    turns: tuple[str, ...] = ()  # turn handles as the model cited them (T1, T2, ...)


@dataclass(frozen=True)
class DedupDecision:
    point: str  # handle of the new point (N1, ...)
    action: str  # keep | discard | merge
    target: str | None = None  # handle of a stored point (E1, ...)
    content: str = ""  # merge: the text that replaces both


def _pick(value: Any, choices: Sequence[str]) -> str | None:
    """The choice `value` names, case-insensitively; None when it names none."""
    if not isinstance(value, str):
        return None
    return next((c for c in choices if c.lower() == value.strip().lower()), None)


def parse_points(value: Any) -> tuple[list[MemoryPoint], list[OpError]]:
    """`{"points": [{"type", "tag", "content", "turns"}]}` → memory points plus typed errors."""
    raw = value.get("points") if isinstance(value, dict) else None
    if not isinstance(raw, list):
        return [], [OpError("the answer has no 'points' list")]
    points: list[MemoryPoint] = []
    errors: list[OpError] = []
    for i, p in enumerate(raw):
        if not isinstance(p, dict):
            errors.append(OpError("point is not an object", i))
            continue
        kind, tag, content, turns = _pick(p.get("type"), POINT_TYPES), _pick(p.get("tag"), POINT_TAGS), \
            p.get("content"), p.get("turns", [])
        if isinstance(turns, str):
            turns = [turns]
        if kind is None:
            errors.append(OpError(f"type {p.get('type')!r} is not one of {list(POINT_TYPES)}", i))
        elif tag is None:
            errors.append(OpError(f"tag {p.get('tag')!r} is not one of {list(POINT_TAGS)}", i))
        elif not isinstance(content, str) or not normalize_text(content):
            errors.append(OpError("point without content", i))
        elif turns is not None and not (isinstance(turns, list) and all(isinstance(t, str) for t in turns)):
            errors.append(OpError("'turns' must be a list of turn handles", i))
        else:
            handles = tuple(dict.fromkeys(t.strip().upper() for t in turns or [] if t.strip()))
            points.append(MemoryPoint(kind, tag, content.strip(), handles))
    return points, errors


def parse_dedup(
    value: Any, points: Sequence[str], existing: Sequence[str]
) -> tuple[dict[str, DedupDecision], list[OpError]]:
    """`{"decisions": [{"point", "action", "target", "content"}]}` → one decision per known point."""
    raw = value.get("decisions") if isinstance(value, dict) else None
    if not isinstance(raw, list):
        return {}, [OpError("the answer has no 'decisions' list")]
    decisions: dict[str, DedupDecision] = {}
    errors: list[OpError] = []
    for i, d in enumerate(raw):
        if not isinstance(d, dict):
            errors.append(OpError("decision is not an object", i))
            continue
        point = d.get("point").strip().upper() if isinstance(d.get("point"), str) else None
        action = _pick(d.get("action"), DEDUP_ACTIONS)
        target = d.get("target") or ""
        content = d.get("content") or ""
        if point not in points:
            errors.append(OpError(f"decision for unknown point {d.get('point')!r}", i))
        elif point in decisions:
            errors.append(OpError(f"second decision for {point} (the first one stands)", i))
        elif action is None:
            errors.append(OpError(f"action {d.get('action')!r} is not one of {list(DEDUP_ACTIONS)}", i))
        elif not isinstance(target, str) or not isinstance(content, str):
            errors.append(OpError("'target' and 'content' must be strings", i))
        elif action == "keep":
            decisions[point] = DedupDecision(point, "keep")
        elif target.strip().upper() not in existing:
            errors.append(OpError(f"{action} of {point} names unknown stored point {target!r}", i))
        else:
            decisions[point] = DedupDecision(point, action, target.strip().upper(), content.strip())
    return decisions, errors


@dataclass(frozen=True)
class Pending:
    """A new point with where it came from, waiting to be placed in the store."""

    point: MemoryPoint
    prov: Provenance


def point_text(point: MemoryPoint, content: str | None = None, date: str | None = None) -> str:
    body = (content or point.content).strip()
    return f"[{date}] {body}" if date else body


def point_meta(point: MemoryPoint, content: str | None = None) -> dict[str, Any]:
    return {"type": point.type, "tag": point.tag, "content": (content or point.content).strip()}


class PointStore(ItemStore):
    """Memory points (kind "point"); `redirect` follows items replaced by merges to their successor."""

    def __init__(self, items: Sequence[MemoryItem] = (), redirect: Mapping[str, str] | None = None):
        super().__init__("point", items)
        self.redirect: dict[str, str] = dict(redirect or {})

    def resolve(self, item_id: str) -> str:
        seen = set()
        while item_id in self.redirect and item_id not in seen:
            seen.add(item_id)
            item_id = self.redirect[item_id]
        return item_id

    def find_content(self, content: str) -> MemoryItem | None:
        norm = normalize_text(content)
        return next((it for it in self.items.values() if normalize_text(it.metadata.get("content", it.text)) == norm),
                    None)

    def keep(self, pending: Pending, date: str | None) -> MemoryOp:
        return self.add(point_text(pending.point, date=date), pending.prov, point_meta(pending.point))

    def fold(self, target: str, pending: Pending, reason: str) -> MemoryOp:
        """The new point is already said by `target`: only widen that item's provenance."""
        target = self.resolve(target)
        if target not in self.items:
            raise OpError(f"stored point {target} is gone")
        merged = widen(self.items[target], pending.prov)
        self.items[target] = merged
        return MemoryOp(op="DEDUP", item=merged, target_id=target, session_id=pending.prov.session_id, reason=reason)

    def merge_into(self, target: str, pending: Pending, content: str, date: str | None) -> MemoryOp:
        """REPLACE `target` by the merged point; the old item is removed (no stale copy)."""
        target = self.resolve(target)
        if target not in self.items:
            raise OpError(f"stored point {target} is gone")
        content = content.strip() or pending.point.content
        op = self.update(target, point_text(pending.point, content, date), pending.prov,
                         point_meta(pending.point, content))
        if op.item.id != target:
            self.redirect[target] = op.item.id
        return op.model_copy(update={"op": "MERGE", "reason": f"new point merged into {target}"})


def apply_decision(store: PointStore, pending: Pending, decision: DedupDecision | None,
                   handles: Mapping[str, str], date: str | None) -> MemoryOp:
    """Place one point by its decision (None: keep). Raises OpError when the target is gone."""
    if decision is None or decision.action == "keep":
        return store.keep(pending, date)
    target = handles[decision.target]
    if decision.action == "discard":
        return store.fold(target, pending, "discarded: a stored point already says it")
    return store.merge_into(target, pending, decision.content, date)


class RealMemMemory(EmbeddingRetrieval, LLMMemoryFramework, MemoryFramework):
    name = "realmem"

    def __init__(self, config: MemoryConfig, engine=None, embedder=None, log: TrajectoryLog | None = None,
                 max_retries: int = 2):
        super().__init__(config, engine, embedder, log, max_retries)
        self.cache = self.embedding_cache()
        self.points = PointStore()

    def __len__(self) -> int:
        return len(self.points)

    def memory_items(self) -> list[MemoryItem]:
        return self.points.values()

    # -- extraction ------------------------------------------------------------------------------

    def _dialogue(self, turns: Sequence[Turn]) -> tuple[dict[str, str], str]:
        """Turn handles (T1, ...) and the numbered transcript, newest turns kept within budget."""
        budget = self.settings.session_chars
        lines: list[str] = []
        used = 0
        for i in range(len(turns), 0, -1):
            line = f"T{i}: {turn_line(turns[i - 1])}"
            if lines and used + len(line) + 1 > budget:
                break
            lines.append(line[:budget])
            used += len(line) + 1
        lines.reverse()
        first = len(turns) - len(lines) + 1
        handles = {f"T{i}": turns[i - 1].id for i in range(first, len(turns) + 1)}
        head = "[... earlier turns left out ...]\n" if first > 1 else ""
        return handles, head + "\n".join(lines)

    def extract(self, session: Session, persona: Persona | None) -> list[Pending]:
        turns = spoken_turns(session)
        if not turns:
            return []
        handles, dialogue = self._dialogue(turns)
        spec = CallSpec(load_prompt("realmem", "extract"),
                        {"persona": persona_text(persona), "session": session.id,
                         "date": session.timestamp or "unknown", "dialogue": dialogue},
                        session.id, {}, id_fields={"turns": list(handles)})
        out = self.model.run([spec])[0]
        if not out.ok:
            return []
        points, errors = parse_points(out.parsed)
        self._note_errors(session.id, "extract", errors)
        pending: list[Pending] = []
        for p in points:
            if p.tag == "Draft" and not self.settings.keep_drafts:
                continue
            cited = tuple(dict.fromkeys(handles[h] for h in p.turns if h in handles))
            if not cited:
                self.log.note("points_without_turns")
                cited = tuple(handles.values())
            pending.append(Pending(p, Provenance(session.id, cited, session.timestamp)))
        return pending

    # -- dedup -----------------------------------------------------------------------------------

    def _dedup_prompt(self, n_points: int, existing: Sequence[str]) -> PromptSpec:
        """The dedup prompt with this batch's handles as the only values 'point' / 'target' may take."""
        prompt = load_prompt("realmem", "dedup")
        schema = copy.deepcopy(prompt.schema)
        props = schema["properties"]["decisions"]["items"]["properties"]
        props["point"] = {"enum": [f"N{j}" for j in range(1, n_points + 1)]}
        props["target"] = {"enum": ["", *existing]}
        return dataclasses.replace(prompt, schema=schema)

    def dedup(self, session: Session, pending: list[Pending]) -> list[MemoryOp]:
        date = session.timestamp if self.config.include_timestamp else None
        ops: list[MemoryOp] = []
        fresh: list[Pending] = []
        position: dict[str, int] = {}  # normalised content -> index in `fresh`
        for p in pending:  # exact repeats (normalised text) need no model
            norm = normalize_text(p.point.content)
            same = self.points.find_content(p.point.content)
            if same is not None:
                ops.append(self.points.fold(same.id, p, "same text as a stored point"))
            elif norm in position:  # said twice in this session: one point citing both turns
                q = fresh[position[norm]]
                turns = tuple(ordered_union(q.prov.turn_ids, p.prov.turn_ids))
                fresh[position[norm]] = Pending(q.point, dataclasses.replace(q.prov, turn_ids=turns))
            else:
                position[norm] = len(fresh)
                fresh.append(p)
        stored = self.points.values()
        ranked = rank_items(self.cache, [p.point.content for p in fresh], stored, self.settings.dedup_candidates)
        candidates = [[stored[i].id for i, s in r if s >= self.settings.dedup_min_similarity] for r in ranked]
        asked = [j for j, c in enumerate(candidates) if c]
        cap = load_prompt("realmem", "dedup").schema["properties"]["decisions"]["maxItems"]
        size = max(1, min(self.settings.dedup_batch, self.config.llm_call.max_items, cap))  # all answerable
        batches = [asked[b:b + size] for b in range(0, len(asked), size)]
        specs, contexts = [], []
        for batch in batches:
            ids = list(dict.fromkeys(i for j in batch for i in candidates[j]))
            ids.sort(key=[it.id for it in stored].index)  # store order: oldest first
            handles = {f"E{n}": i for n, i in enumerate(ids, start=1)}
            rows = [{"handle": h, "id": i, "text": self.points.items[i].text} for h, i in handles.items()]
            new_rows = [{"handle": f"N{n}", "type": fresh[j].point.type, "tag": fresh[j].point.tag,
                         "content": fresh[j].point.content} for n, j in enumerate(batch, start=1)]
            specs.append(CallSpec(self._dedup_prompt(len(batch), list(handles)),
                                  {"existing": "\n".join(f"{r['handle']}: {r['text']}" for r in rows),
                                   "new": "\n".join(f"{r['handle']} [{r['type']}, {r['tag']}]: {r['content']}"
                                                    for r in new_rows),
                                   "session": session.id, "date": session.timestamp or "unknown"},
                                  session.id, {"existing": rows, "new": new_rows}))
            contexts.append(handles)
        decided: dict[int, tuple[DedupDecision | None, dict[str, str]]] = {}
        for batch, handles, out in zip(batches, contexts, self.model.run(specs)):
            names = [f"N{n}" for n in range(1, len(batch) + 1)]
            if out.ok:
                decisions, errors = parse_dedup(out.parsed, names, list(handles))
                missing = [n for n in names if n not in decisions]
                errors += [OpError(f"no decision for {n}; the point is kept") for n in missing]
                self._note_errors(session.id, "dedup", errors)
            else:
                decisions = {}
                self.log.note("dedup_failed_batches")
            for n, j in zip(names, batch):
                decided[j] = (decisions.get(n), handles)
        for j, p in enumerate(fresh):  # in the order the session gave them
            decision, handles = decided.get(j, (None, {}))
            try:
                ops.append(apply_decision(self.points, p, decision, handles, date))
            except OpError as err:  # its target was replaced earlier and is gone: keep the point
                self._note_errors(session.id, "dedup", [err])
                ops.append(self.points.keep(p, date))
        return ops

    def ingest(self, session: Session, persona: Persona | None = None) -> list[MemoryOp]:
        return self.dedup(session, self.extract(session, persona))

    # -- state -----------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {"name": self.name, "config": self.config.model_dump(mode="json"),
                "points": [it.model_dump(mode="json") for it in self.points.values()],
                "redirect": dict(self.points.redirect), "op_errors": list(self.op_errors),
                "stats": self.log.stats()}

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"snapshot is of '{state.get('name')}', not '{self.name}'")
        self.points = PointStore([MemoryItem.model_validate(x) for x in state["points"]], state.get("redirect", {}))
        self.op_errors = list(state.get("op_errors", []))
