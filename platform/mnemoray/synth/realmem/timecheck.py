"""Time control, checked on the written session rather than trusted to the agents.

Two leaks make a session invalid:
- a user turn that mentions an event dated after the session (the user agent was only told
  the past; "mentions" = the turn holds at least `min_overlap` of the event name's content
  words, and the name has at least two of them);
- an assistant turn whose `memory_used` / `memory_session_uuids` cite a session that is not
  earlier on the persona's timeline (the current one included).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from mnemoray.synth.checks import content_words, overlap

FUTURE_EVENT = "time_leak_future_event"
FUTURE_MEMORY = "time_leak_future_memory"
MIN_NAME_WORDS = 2


def future_events(events: Iterable[dict[str, Any]], day: str) -> list[dict[str, Any]]:
    """Events dated after `day` (ISO dates compare as strings)."""
    return [e for e in events if e["date"] > day]


def cited_sessions(turn: dict[str, Any]) -> list[str]:
    cited = [m.get("session_uuid") for m in turn.get("memory_used") or [] if isinstance(m, dict)]
    return list(dict.fromkeys([*cited, *(turn.get("memory_session_uuids") or [])]))


def time_problems(turns: list[dict[str, Any]], day: str, events: Iterable[dict[str, Any]],
                  earlier_sessions: Collection[str], min_overlap: float) -> list[tuple[str, str]]:
    """(reason, detail) for every leak in a session's turns (empty: the session is clean).

    `day` is the session's date, `events` every event of the persona (all projects), and
    `earlier_sessions` the uuids of the sessions before this one on the timeline.
    """
    ahead = [e for e in future_events(events, day) if len(content_words(e["name"])) >= MIN_NAME_WORDS]
    problems: list[tuple[str, str]] = []
    for i, turn in enumerate(turns, start=1):
        if turn.get("speaker") == "User":
            for e in ahead:
                if overlap(e["name"], turn.get("content", "")) >= min_overlap:
                    problems.append((FUTURE_EVENT, f"turn {i} mentions event {e['name']!r} dated {e['date']}, "
                                                   f"after the session's {day}"))
        else:
            for uuid in cited_sessions(turn):
                if uuid not in earlier_sessions:
                    problems.append((FUTURE_MEMORY, f"turn {i} cites session {uuid}, which is not before this one"))
    return problems
