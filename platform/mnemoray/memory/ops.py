"""Deterministic memory-op parsing and application, with provenance (no LLM, no Ray).

The memory model only proposes; this module decides. Parsers take any JSON value and
return well-formed ops plus typed `OpError`s for everything else — they never raise on
model output. Appliers change stores by plain rules:

- ADD inserts an item (an exact duplicate after text normalisation only widens the
  existing item's provenance);
- UPDATE replaces the item it names and MERGE replaces all the items it names with one
  new item: the originals are removed, so no stale copy is left behind; the new item
  inherits the union of their provenance;
- SKIP changes nothing and is kept as a record;
- the core block takes APPEND / REPLACE (exact passage) / REWRITE.

Items are `MemoryItem`s: `session_id` is the session that last wrote the item, `turn_ids`
every turn that contributed, `metadata["sessions"]` every session that contributed.
Ids are content hashes, so the same ops on the same state give the same ids.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mnemoray.records import MemoryItem, MemoryOp, content_id


class OpError(ValueError):
    """One proposed op (or the whole answer) that cannot be applied; `index` is its position."""

    def __init__(self, reason: str, index: int | None = None):
        self.reason = reason
        self.index = index
        super().__init__(reason if index is None else f"operation {index}: {reason}")


@dataclass(frozen=True)
class Provenance:
    session_id: str | None
    turn_ids: tuple[str, ...] = ()
    timestamp: str | None = None


_SPACE = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w\s]")


def normalize_text(text: str) -> str:
    """Case-, accent-width-, punctuation- and whitespace-insensitive form used for dedup."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return _SPACE.sub(" ", _PUNCT.sub(" ", text)).strip()


def ordered_union(first: Sequence[str], second: Sequence[str]) -> list[str]:
    """Both sequences' values, each once, in first-seen order (provenance lists, refs)."""
    return list(dict.fromkeys([*first, *second]))


def new_item(kind: str, text: str, prov: Provenance, metadata: dict[str, Any] | None = None,
             sources: Sequence[MemoryItem] = ()) -> MemoryItem:
    """An item written now from `prov`, inheriting the provenance of the items it replaces."""
    turn_ids: list[str] = []
    sessions: list[str] = []
    for src in sources:
        turn_ids = ordered_union(turn_ids, src.turn_ids)
        sessions = ordered_union(sessions, src.metadata.get("sessions", [src.session_id] if src.session_id else []))
    turn_ids = ordered_union(turn_ids, prov.turn_ids)
    if prov.session_id:
        sessions = ordered_union(sessions, [prov.session_id])
    meta = dict(metadata or {})
    meta["sessions"] = sessions
    return MemoryItem(
        id=content_id(kind, normalize_text(text), prov.session_id, [s.id for s in sources]),
        text=text.strip(),
        kind=kind,
        session_id=prov.session_id,
        turn_ids=turn_ids,
        timestamp=prov.timestamp,
        metadata=meta,
    )


def widen(item: MemoryItem, prov: Provenance) -> MemoryItem:
    """The same item, also attributed to `prov` (used when a duplicate is folded in)."""
    sessions = ordered_union(item.metadata.get("sessions", []), [prov.session_id] if prov.session_id else [])
    return item.model_copy(update={"turn_ids": ordered_union(item.turn_ids, prov.turn_ids),
                                   "metadata": {**item.metadata, "sessions": sessions}})


class ItemStore:
    """An ordered store of one kind of item (oldest first), keyed by id."""

    def __init__(self, kind: str, items: Sequence[MemoryItem] = ()):
        self.kind = kind
        self.items: dict[str, MemoryItem] = {it.id: it for it in items}

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.items

    def values(self) -> list[MemoryItem]:
        return list(self.items.values())

    def find_text(self, text: str) -> MemoryItem | None:
        norm = normalize_text(text)
        return next((it for it in self.items.values() if normalize_text(it.text) == norm), None)

    def put(self, item: MemoryItem) -> None:
        self.items.pop(item.id, None)
        self.items[item.id] = item  # (re)inserted last: the most recent write

    def remove(self, item_id: str) -> MemoryItem:
        return self.items.pop(item_id)

    def add(self, text: str, prov: Provenance, metadata: dict[str, Any] | None = None) -> MemoryOp:
        same = self.find_text(text)
        if same is not None:
            merged = widen(same, prov)
            self.items[same.id] = merged
            return MemoryOp(op="DEDUP", item=merged, target_id=same.id, session_id=prov.session_id,
                            reason="same text as an existing item")
        item = new_item(self.kind, text, prov, metadata)
        self.put(item)
        return MemoryOp(op="ADD", item=item, session_id=prov.session_id)

    def update(self, target: str, text: str, prov: Provenance, metadata: dict[str, Any] | None = None) -> MemoryOp:
        if target not in self.items:
            raise OpError(f"UPDATE names '{target}', which is not in the {self.kind} store")
        old = self.remove(target)
        item = new_item(self.kind, text, prov, {**old.metadata, **(metadata or {})}, sources=[old])
        self.put(item)
        return MemoryOp(op="UPDATE", item=item, target_id=target, session_id=prov.session_id)

    def merge(self, targets: Sequence[str], text: str, prov: Provenance) -> MemoryOp:
        targets = list(dict.fromkeys(targets))
        if len(targets) < 2:
            raise OpError("MERGE needs two or more distinct items")
        missing = [t for t in targets if t not in self.items]
        if missing:
            raise OpError(f"MERGE names {missing}, not in the {self.kind} store")
        olds = [self.remove(t) for t in targets]
        item = new_item(self.kind, text, prov, sources=olds)
        self.put(item)
        return MemoryOp(op="MERGE", item=item, target_id=",".join(targets), session_id=prov.session_id)


# ---- store ops (episodic / semantic / procedural) -------------------------------------------

@dataclass(frozen=True)
class StoreOp:
    action: str
    targets: tuple[str, ...] = ()
    text: str = ""


def _as_str_list(value: Any) -> list[str] | None:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def parse_store_ops(
    value: Any, allowed: Sequence[str], handles: Mapping[str, str]
) -> tuple[list[StoreOp], list[OpError]]:
    """`{"operations": [{"action", "ids", "text"}, ...]}` → ops with handles resolved to item ids."""
    ops: list[StoreOp] = []
    errors: list[OpError] = []
    raw_ops = value.get("operations") if isinstance(value, dict) else None
    if not isinstance(raw_ops, list):
        return [], [OpError("the answer has no 'operations' list")]
    for i, raw in enumerate(raw_ops):
        if not isinstance(raw, dict):
            errors.append(OpError("not an object", i))
            continue
        action = raw.get("action")
        if not isinstance(action, str) or action.strip().upper() not in allowed:
            errors.append(OpError(f"action {action!r} is not one of {list(allowed)}", i))
            continue
        action = action.strip().upper()
        ids = _as_str_list(raw.get("ids"))
        text = raw.get("text", "")
        if ids is None or not isinstance(text, str):
            errors.append(OpError("'ids' must be a list of strings and 'text' a string", i))
            continue
        unknown = [h for h in ids if h.strip() not in handles]
        resolved = tuple(dict.fromkeys(handles[h.strip()] for h in ids if h.strip() in handles))
        text = text.strip()
        if action == "ADD":
            if not text:
                errors.append(OpError("ADD without text", i))
                continue
            ops.append(StoreOp("ADD", (), text))
        elif action == "SKIP":
            ops.append(StoreOp("SKIP", resolved, ""))
        elif unknown:
            errors.append(OpError(f"{action} names unknown entries {unknown}", i))
        elif not text:
            errors.append(OpError(f"{action} without text", i))
        elif action == "UPDATE" and len(resolved) != 1:
            errors.append(OpError(f"UPDATE must name exactly one entry, got {len(resolved)}", i))
        elif action == "MERGE" and len(resolved) < 2:
            errors.append(OpError("MERGE must name two or more distinct entries", i))
        else:
            ops.append(StoreOp(action, resolved, text))
    return ops, errors


def apply_store_ops(store: ItemStore, ops: Sequence[StoreOp], prov: Provenance) -> tuple[list[MemoryOp], list[OpError]]:
    """Apply in order; an op whose target an earlier op already replaced fails alone."""
    done: list[MemoryOp] = []
    errors: list[OpError] = []
    for i, op in enumerate(ops):
        try:
            if op.action == "ADD":
                done.append(store.add(op.text, prov))
            elif op.action == "UPDATE":
                done.append(store.update(op.targets[0], op.text, prov))
            elif op.action == "MERGE":
                done.append(store.merge(op.targets, op.text, prov))
            elif op.action == "SKIP":
                done.append(MemoryOp(op="SKIP", target_id=",".join(op.targets) or None, session_id=prov.session_id))
            else:
                raise OpError(f"unknown action {op.action}")
        except OpError as err:
            errors.append(OpError(err.reason, i))
    return done, errors


# ---- the core block ----------------------------------------------------------------------------

@dataclass(frozen=True)
class CoreOp:
    action: str
    text: str = ""
    old: str = ""


CORE_ACTIONS = ("APPEND", "REPLACE", "REWRITE")


def parse_core_ops(value: Any) -> tuple[list[CoreOp], list[OpError]]:
    """`{"operations": [{"action", "old", "text"}, ...]}` → core ops."""
    raw_ops = value.get("operations") if isinstance(value, dict) else None
    if not isinstance(raw_ops, list):
        return [], [OpError("the answer has no 'operations' list")]
    ops: list[CoreOp] = []
    errors: list[OpError] = []
    for i, raw in enumerate(raw_ops):
        if not isinstance(raw, dict):
            errors.append(OpError("not an object", i))
            continue
        action, text, old = raw.get("action"), raw.get("text", ""), raw.get("old", "")
        if not isinstance(action, str) or action.strip().upper() not in CORE_ACTIONS:
            errors.append(OpError(f"action {action!r} is not one of {list(CORE_ACTIONS)}", i))
        elif not isinstance(text, str) or not isinstance(old, str):
            errors.append(OpError("'text' and 'old' must be strings", i))
        elif not text.strip() and action.strip().upper() != "REPLACE":
            errors.append(OpError(f"{action.strip().upper()} without text", i))
        elif action.strip().upper() == "REPLACE" and not old.strip():
            errors.append(OpError("REPLACE without the passage to replace ('old')", i))
        else:
            ops.append(CoreOp(action.strip().upper(), text.strip(), old.strip()))
    return ops, errors


@dataclass
class CoreBlock:
    """One always-shown text block with the provenance of everything written into it."""

    text: str = ""
    turn_ids: list[str] = field(default_factory=list)
    sessions: list[str] = field(default_factory=list)
    session_id: str | None = None
    timestamp: str | None = None

    def _touch(self, prov: Provenance) -> None:
        self.turn_ids = ordered_union(self.turn_ids, prov.turn_ids)
        if prov.session_id:
            self.sessions = ordered_union(self.sessions, [prov.session_id])
            self.session_id = prov.session_id
        self.timestamp = prov.timestamp or self.timestamp

    def apply(self, ops: Sequence[CoreOp], prov: Provenance) -> tuple[list[MemoryOp], list[OpError]]:
        done: list[MemoryOp] = []
        errors: list[OpError] = []
        for i, op in enumerate(ops):
            if op.action == "APPEND":
                self.text = f"{self.text}\n{op.text}".strip() if self.text else op.text
            elif op.action == "REWRITE":
                self.text = op.text
            elif op.action == "REPLACE":
                if op.old not in self.text:
                    errors.append(OpError("REPLACE: the passage 'old' is not in the core block", i))
                    continue
                self.text = self.text.replace(op.old, op.text, 1).strip()
            self._touch(prov)
            done.append(MemoryOp(op=op.action, item=self.item(), target_id="core", session_id=prov.session_id))
        return done, errors

    def item(self) -> MemoryItem:
        return MemoryItem(id="core", text=self.text, kind="core", session_id=self.session_id,
                          turn_ids=list(self.turn_ids), timestamp=self.timestamp,
                          metadata={"sessions": list(self.sessions)})

    def state(self) -> dict[str, Any]:
        return {"text": self.text, "turn_ids": list(self.turn_ids), "sessions": list(self.sessions),
                "session_id": self.session_id, "timestamp": self.timestamp}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> CoreBlock:
        return cls(**state)


def fit_core(text: str, limit: int) -> str:
    """Deterministic last resort when LLM compression fails: whole lines from the start, ≤ limit."""
    if len(text) <= limit:
        return text
    kept: list[str] = []
    size = 0
    for line in text.splitlines():
        extra = len(line) + (1 if kept else 0)
        if size + extra > limit:
            break
        kept.append(line)
        size += extra
    return "\n".join(kept) if kept else text[:limit]
