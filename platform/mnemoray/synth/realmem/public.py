"""RealMem's public history format, `<Name>_dialogues_256k.json`, as typed models.

    {"_metadata": {"person_name", "total_sessions", "total_tokens"},
     "dialogues": [{"session_identifier", "session_uuid", "current_time", "dialogue_turns": [
         {"speaker": "User", "is_query", "content", "query_id", ["topic", "category_name", "session_type"]},
         {"speaker": "Assistant", "is_query", "content", ["memory_used", "memory_session_uuids"], "query_id"}],
       "extracted_memory": [{"index", "type", "content", "source_turn", "source_content_snapshot",
                             "source_role_snapshot", "session_uuid"}]}]}

Keys in brackets appear only on some turns (query turns, answers that used memory); the writer
emits exactly the keys a turn has, in RealMem's order, so a public file read and written back
is equal. `mnemoray.loaders.realmem` reads what this module writes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

SUFFIX = "_dialogues_256k.json"
USER_KEYS = ("speaker", "is_query", "content", "query_id", "topic", "category_name", "session_type")
ASSISTANT_KEYS = ("speaker", "is_query", "content", "memory_used", "memory_session_uuids", "query_id")
OPTIONAL = ("topic", "category_name", "session_type", "memory_used", "memory_session_uuids")


class MemoryRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    session_uuid: str
    content: str


class PublicTurn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    speaker: str
    is_query: bool = False
    content: str
    query_id: str | None = None
    topic: str | None = None
    category_name: str | None = None
    session_type: str | None = None
    memory_used: list[MemoryRef] | None = None
    memory_session_uuids: list[str] | None = None

    def dump(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        order = USER_KEYS if self.speaker == "User" else ASSISTANT_KEYS
        order = order + tuple(k for k in USER_KEYS + ASSISTANT_KEYS if k not in order)
        present = self.model_fields_set | {"is_query", "query_id"}
        return {k: data[k] for k in dict.fromkeys(order) if k in present and not (k in OPTIONAL and data[k] is None)}


class ExtractedMemory(BaseModel):
    model_config = ConfigDict(extra="forbid")
    index: str
    type: str
    content: str
    source_turn: int
    source_content_snapshot: str
    source_role_snapshot: str
    session_uuid: str


class PublicSession(BaseModel):
    model_config = ConfigDict(extra="forbid")
    session_identifier: str
    session_uuid: str
    current_time: str
    dialogue_turns: list[PublicTurn]
    extracted_memory: list[ExtractedMemory]

    def dump(self) -> dict[str, Any]:
        return {"session_identifier": self.session_identifier, "session_uuid": self.session_uuid,
                "current_time": self.current_time, "dialogue_turns": [t.dump() for t in self.dialogue_turns],
                "extracted_memory": [m.model_dump(mode="json") for m in self.extracted_memory]}


class PublicMetadata(BaseModel):
    model_config = ConfigDict(extra="allow")
    person_name: str
    total_sessions: int
    total_tokens: int


class PublicHistory(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    metadata: PublicMetadata
    dialogues: list[PublicSession]

    def dump(self) -> dict[str, Any]:
        return {"_metadata": self.metadata.model_dump(mode="json"), "dialogues": [s.dump() for s in self.dialogues]}


def read_public(path: str | Path) -> PublicHistory:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return PublicHistory(metadata=PublicMetadata.model_validate(data["_metadata"]),
                         dialogues=[PublicSession.model_validate(s) for s in data["dialogues"]])


def write_public(history: PublicHistory, folder: str | Path, stem: str | None = None) -> Path:
    """Write `<stem>_dialogues_256k.json` atomically (stem: the person's name); returns the path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem or history.metadata.person_name}{SUFFIX}"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(history.dump(), ensure_ascii=False, indent=2), encoding="utf-8")
    os.replace(tmp, path)
    return path
