"""PerLTQA (Du et al. 2024): a memory file (`perltmem_*.json`) and a QA file (`perltqa_*.json`).

Each character's memory units (profile fields, social relationships, events, dialogues)
become sessions of one history; gold = the QA item's `Reference Memory` ids, prefixed by
the memory section they belong to (e.g. `events:1_0_0`, `profile:Gender`).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mnemoray.loaders.errors import DatasetError
from mnemoray.loaders.jsonstream import iter_array, iter_object, top_level_kind
from mnemoray.records import EvalSample, EvidenceQuery, History, Persona, Session, Turn, make_turn_id

SECTIONS = ("profile", "social_relationship", "events", "dialogues")


def find_pair(path: Path) -> tuple[Path, Path]:
    """Return (memory file, QA file) for a folder or for either file of the pair."""
    folder = path if path.is_dir() else path.parent
    mems = sorted(folder.glob("perltmem*.json"))
    qas = sorted(folder.glob("perltqa*.json"))
    if path.is_file():
        if path.name.startswith("perltmem"):
            mems = [path]
        elif path.name.startswith("perltqa"):
            qas = [path]
    if not mems:
        raise DatasetError(folder, None, None, "no perltmem*.json memory file next to the QA file")
    if not qas:
        raise DatasetError(folder, None, None, "no perltqa*.json QA file next to the memory file")
    return mems[0], qas[0]


def _references(raw: Any) -> list[str]:
    if isinstance(raw, list):
        return [str(x) for x in raw]
    text = str(raw or "").strip()
    if text.startswith("["):
        try:
            value = ast.literal_eval(text)
            return [str(x) for x in value]
        except (ValueError, SyntaxError):
            pass
    return [text] if text else []


def _flatten(value: Any) -> list[tuple[str, str]]:
    """(speaker, text) pairs from any nested dialogue structure."""
    if isinstance(value, str):
        return [("", value)]
    if isinstance(value, list):
        out: list[tuple[str, str]] = []
        for v in value:
            out.extend(_flatten(v))
        return out
    if isinstance(value, dict):
        out = []
        for k, v in value.items():
            if isinstance(v, str):
                out.append((str(k), v))
            else:
                out.extend(_flatten(v))
        return out
    return [("", str(value))] if value is not None else []


def _session(sid: str, timestamp: str | None, pairs: list[tuple[str, str]], kind: str) -> Session:
    turns = [Turn(id=make_turn_id(sid, i), speaker=s or kind, text=t, index=i) for i, (s, t) in enumerate(pairs) if t]
    if not turns:
        turns = [Turn(id=make_turn_id(sid, 0), speaker=kind, text="(empty)", index=0)]
    return Session(id=sid, timestamp=timestamp, turns=turns, metadata={"kind": kind})


def memory_sessions(path: Path, name: str, mem: Any) -> list[Session]:
    if not isinstance(mem, dict):
        raise DatasetError(path, name, None, "expected a JSON object of memory sections")
    sessions: list[Session] = []
    profile = mem.get("profile") or {}
    if not isinstance(profile, dict):
        raise DatasetError(path, name, "profile", "must be an object of profile fields")
    for field, value in profile.items():
        sessions.append(_session(f"profile:{field}", None, [(name, f"{field}: {value}")], "profile"))
    for section in ("social_relationship", "events", "dialogues"):
        units = mem.get(section) or {}
        if not isinstance(units, dict):
            raise DatasetError(path, name, section, "must be an object keyed by memory id")
        for mid, unit in units.items():
            timestamp = None
            if isinstance(unit, dict):
                for key, v in unit.items():
                    if "time" in key.lower() and isinstance(v, str) and v and "last" not in key.lower():
                        timestamp = v
                        break
            if section == "events" and isinstance(unit, dict):
                pairs = [(name, f"{unit.get('summary', '')}. {unit.get('content', '')}".strip(". "))]
            elif section == "social_relationship" and isinstance(unit, dict):
                who = unit.get("Supporting Characters", "")
                rel = unit.get("Relationship", "")
                pairs = [(name, f"{who} ({rel}): {unit.get('Description', '')}")]
            else:
                pairs = _flatten(unit)
            sessions.append(_session(f"{section}:{mid}", timestamp, pairs, section))
    return sessions


def _queries(path: Path, name: str, qa: Any) -> list[EvidenceQuery]:
    if not isinstance(qa, dict):
        raise DatasetError(path, name, None, "expected a JSON object of QA sections")
    queries: list[EvidenceQuery] = []
    for section in SECTIONS:
        groups = qa.get(section) or []
        if section == "profile":
            groups = [{"": groups}]
        for gi, group in enumerate(groups):
            if not isinstance(group, dict):
                raise DatasetError(path, name, f"{section}.{gi}", "expected an object keyed by memory id")
            for _, items in group.items():
                for ii, item in enumerate(items or []):
                    if not isinstance(item, dict) or "Question" not in item:
                        raise DatasetError(path, name, f"{section}.{gi}.{ii}.Question", "missing")
                    refs = _references(item.get("Reference Memory"))
                    if not refs:
                        raise DatasetError(path, name, f"{section}.{gi}.{ii}.Reference Memory", "missing")
                    queries.append(
                        EvidenceQuery(
                            id=f"{name}:{section}:{len(queries)}",
                            history_id=name,
                            text=str(item["Question"]),
                            gold_ids=[f"{section}:{r}" for r in refs],
                            gold_level="session",
                            category=section,
                            answer=str(item.get("Answer", "")),
                        )
                    )
    return queries


def _load_qa(qa_path: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    kind = top_level_kind(qa_path)
    if kind == "array":
        for entry in iter_array(qa_path):
            if isinstance(entry, dict):
                out.update(entry)
    elif kind == "object":
        out.update(dict(iter_object(qa_path)))
    else:
        raise DatasetError(qa_path, None, None, "expected a JSON array or object of characters")
    return out


def _iter_memories(mem_path: Path) -> Iterator[tuple[str, Any]]:
    kind = top_level_kind(mem_path)
    if kind == "object":
        yield from iter_object(mem_path)
    elif kind == "array":
        for i, entry in enumerate(iter_array(mem_path)):
            name = entry.get("profile", {}).get("Protagonist") if isinstance(entry, dict) else None
            if not name:
                raise DatasetError(mem_path, i, "profile.Protagonist", "missing")
            yield name, entry
    else:
        raise DatasetError(mem_path, None, None, "expected a JSON object or array of characters")


def iter_perltqa(path: Path) -> Iterator[EvalSample | DatasetError]:
    try:
        mem_path, qa_path = find_pair(path)
        qa_by_name = _load_qa(qa_path)
        for name, mem in _iter_memories(mem_path):
            if name not in qa_by_name:
                continue
            try:
                sessions = memory_sessions(mem_path, name, mem)
                queries = _queries(qa_path, name, qa_by_name[name])
            except DatasetError as err:
                yield err
                continue
            history = History(id=name, dataset="perltqa", persona=Persona(id=name, name=name), sessions=sessions)
            yield EvalSample(history=history, queries=queries)
    except DatasetError as err:
        yield err
