"""Dialogue text as the memory model reads it: one `Speaker: text` line per turn."""

from __future__ import annotations

from collections.abc import Sequence

from mnemoray.records import Persona, Session, Turn


def turn_line(turn: Turn) -> str:
    return f"{turn.speaker}: {turn.text}" if turn.speaker else turn.text


def transcript(turns: Sequence[Turn]) -> str:
    return "\n".join(turn_line(t) for t in turns)


def spoken_turns(session: Session) -> list[Turn]:
    return [t for t in session.turns if t.text.strip()]


def chunk_turns(session: Session, size: int) -> list[list[Turn]]:
    turns = spoken_turns(session)
    return [turns[i:i + size] for i in range(0, len(turns), size)]


def persona_text(persona: Persona | None) -> str:
    if persona is None:
        return "(no persona given)"
    parts = [p for p in (persona.name, persona.description) if p]
    parts += [f"- {f}" for f in persona.facts]
    return "\n".join(parts) or f"(persona {persona.id})"
