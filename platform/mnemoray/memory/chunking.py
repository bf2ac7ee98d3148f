"""Turn raw dialogue into memory items: one per turn, per turn pair, or per session.

Each item keeps provenance (session id, turn ids) and, when known, the session date in its
text, so temporal questions can match it.
"""

from __future__ import annotations

from typing import Literal

from mnemoray.records import MemoryItem, Session, Turn

Chunking = Literal["turn", "pair", "session"]


def _line(turn: Turn) -> str:
    return f"{turn.speaker}: {turn.text}" if turn.speaker else turn.text


def _item(session: Session, turns: list[Turn], include_timestamp: bool) -> MemoryItem:
    body = "\n".join(_line(t) for t in turns)
    if include_timestamp and session.timestamp:
        body = f"[{session.timestamp}] {body}"
    first = turns[0].index
    return MemoryItem(
        id=f"{session.id}#c{first}",
        text=body,
        kind="chunk",
        session_id=session.id,
        turn_ids=[t.id for t in turns],
        timestamp=session.timestamp,
    )


def chunk_session(session: Session, chunking: Chunking = "pair", include_timestamp: bool = True) -> list[MemoryItem]:
    turns = [t for t in session.turns if t.text.strip()]
    if not turns:
        return []
    if chunking == "turn":
        groups = [[t] for t in turns]
    elif chunking == "pair":
        groups = [turns[i:i + 2] for i in range(0, len(turns), 2)]
    elif chunking == "session":
        groups = [turns]
    else:
        raise ValueError(f"unknown chunking '{chunking}' (turn, pair or session)")
    return [_item(session, g, include_timestamp) for g in groups]
