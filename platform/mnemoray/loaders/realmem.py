"""RealMem (RealMemBench `*_dialogues_256k.json`): one persona history per file.

Protocol: a query (user turn with `is_query`) sees only the sessions before its own;
gold = `memory_session_uuids` of the assistant turn that answers it (session level).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from mnemoray.loaders.errors import DatasetError, from_validation_error
from mnemoray.loaders.jsonstream import iter_object, top_level_kind
from mnemoray.records import EvalSample, EvidenceQuery, History, Persona, Session, Turn, make_turn_id


class _RawTurn(BaseModel):
    model_config = ConfigDict(extra="allow")
    speaker: str
    content: str
    is_query: bool = False
    query_id: str | None = None
    memory_session_uuids: list[str] | None = None
    category_name: str | None = None
    session_type: str | None = None
    topic: str | None = None


class _RawSession(BaseModel):
    model_config = ConfigDict(extra="allow")
    session_uuid: str
    session_identifier: str | None = None
    current_time: str | None = None
    dialogue_turns: list[_RawTurn]


def is_history_file(path: Path) -> bool:
    """A history file, not one of the persona/goal files under all_persona_topic/."""
    return "all_persona_topic" not in path.parts


def parse_history(path: Path, metadata: dict[str, Any], raw_sessions: Any) -> EvalSample:
    name = str(metadata.get("person_name") or path.stem.replace("_dialogues_256k", ""))
    if not isinstance(raw_sessions, list):
        raise DatasetError(path, name, "dialogues", "must be a list of sessions")
    sessions: list[Session] = []
    queries: list[EvidenceQuery] = []
    seen: set[str] = set()
    for si, raw in enumerate(raw_sessions):
        try:
            s = _RawSession.model_validate(raw)
        except ValidationError as err:
            record = raw.get("session_uuid", f"session {si}") if isinstance(raw, dict) else f"session {si}"
            raise from_validation_error(path, f"{name}/{record}", err, prefix=f"dialogues.{si}") from None
        if s.session_uuid in seen:
            raise DatasetError(path, f"{name}/{s.session_uuid}", f"dialogues.{si}.session_uuid", "duplicate session id")
        seen.add(s.session_uuid)
        turns = [
            Turn(id=make_turn_id(s.session_uuid, ti), speaker=t.speaker, text=t.content, index=ti, is_query=t.is_query)
            for ti, t in enumerate(s.dialogue_turns)
        ]
        for ti, t in enumerate(s.dialogue_turns):
            if not t.is_query:
                continue
            answer = s.dialogue_turns[ti + 1] if ti + 1 < len(s.dialogue_turns) else None
            gold = list(dict.fromkeys(answer.memory_session_uuids or [])) if answer else []
            if not gold:
                continue
            queries.append(
                EvidenceQuery(
                    id=t.query_id or f"{name}:{s.session_uuid}:{ti}",
                    history_id=name,
                    text=t.content,
                    gold_ids=gold,
                    gold_level="session",
                    category=t.category_name,
                    answer=answer.content if answer else None,
                    visible_sessions=si,
                    metadata={"session_type": t.session_type, "topic": t.topic, "session_id": s.session_uuid},
                )
            )
        sessions.append(
            Session(
                id=s.session_uuid,
                timestamp=s.current_time,
                turns=turns,
                metadata={"identifier": s.session_identifier},
            )
        )
    history = History(
        id=name, dataset="realmem", persona=Persona(id=name, name=name.replace("_", " ")), sessions=sessions
    )
    return EvalSample(history=history, queries=queries)


def iter_realmem(path: Path) -> Iterator[EvalSample | DatasetError]:
    if top_level_kind(path) != "object":
        yield DatasetError(path, None, None, "expected a JSON object with 'dialogues' (a RealMem history)")
        return
    metadata: dict[str, Any] = {}
    dialogues: Any = None
    try:
        for key, value in iter_object(path):
            if key == "_metadata" and isinstance(value, dict):
                metadata = value
            elif key == "dialogues":
                dialogues = value
    except DatasetError as err:
        yield err
        return
    if dialogues is None:
        yield DatasetError(path, metadata.get("person_name"), "dialogues", "missing")
        return
    try:
        yield parse_history(path, metadata, dialogues)
    except DatasetError as err:
        yield err
