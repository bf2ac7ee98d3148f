"""BOOKMARKS story data (KomeijiForce/BOOKMARKS_Koishiday_2026 `data/`): action series of works.

Files: `title2action_series.<work>.json` = `{title: [{"action": ..., "character": ...}, ...]}`
with titles (episodes, chapters) in story order, and `all_characters.json` =
`{work: {"major": [names], "minor": [names]}}` next to them.

Mapping: one History per work file (id = the work name), one Session per title in file
order (id `<work>:<title>`, no timestamp: the data has no dates), one Turn per action
(speaker = character, text = action, id `<work>:<title>#t<i>` with i the action's position
in its title's list). Persona = the work's major characters when `all_characters.json`
lists the work (otherwise none). The data has no questions: every sample has zero
queries, so it serves memory building, not evidence-retrieval scoring.

Malformed titles and actions are yielded as DatasetError values (record = title) and left
out; the rest of the work is kept. Titles with an empty action list are skipped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mnemoray.loaders.errors import DatasetError
from mnemoray.loaders.jsonstream import iter_object, top_level_kind
from mnemoray.records import EvalSample, History, Persona, Session, Turn, make_turn_id

CHARACTERS_FILE = "all_characters.json"
_WORK_FILE = re.compile(r"^title2action_series\.(.+)\.json$")


def is_work_file(path: Path) -> bool:
    return bool(_WORK_FILE.match(path.name))


def work_name(path: Path) -> str:
    m = _WORK_FILE.match(path.name)
    return m.group(1) if m else path.stem


def _characters(file: Path, work: str) -> tuple[dict[str, list[str]] | None, DatasetError | None]:
    """The work's {"major": [...], "minor": [...]} from all_characters.json (None if absent)."""
    if not file.is_file():
        return None, None
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return None, DatasetError(file, None, None, f"malformed JSON ({err})")
    if not isinstance(raw, dict):
        return None, DatasetError(file, None, None, 'expected a JSON object {work: {"major": [...], "minor": [...]}}')
    entry = raw.get(work)
    if entry is None:
        return None, None
    if not isinstance(entry, dict):
        return None, DatasetError(file, work, None, "expected an object {\"major\": [...], \"minor\": [...]}")
    out: dict[str, list[str]] = {}
    for group in ("major", "minor"):
        names = entry.get(group, [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            return None, DatasetError(file, work, group, "must be a list of character names")
        out[group] = list(names)
    return out, None


def _session(path: Path, work: str, title: str, raw: Any) -> tuple[Session | None, list[DatasetError]]:
    if not isinstance(raw, list):
        return None, [DatasetError(path, title, None, "expected a list of {action, character} objects")]
    sid = f"{work}:{title}"
    turns: list[Turn] = []
    errors: list[DatasetError] = []
    for i, step in enumerate(raw):
        if not isinstance(step, dict):
            errors.append(DatasetError(path, title, f"[{i}]", "expected an object {action, character}"))
            continue
        action, character = step.get("action"), step.get("character")
        if not isinstance(action, str) or not action.strip():
            reason = "missing" if action is None else ("empty" if isinstance(action, str) else "must be a string")
            errors.append(DatasetError(path, title, f"[{i}].action", f"{reason} (the action text)"))
            continue
        if not isinstance(character, str):
            reason = "missing" if character is None else "must be a string"
            errors.append(DatasetError(path, title, f"[{i}].character", f"{reason} (who acts)"))
            continue
        turns.append(Turn(id=make_turn_id(sid, i), speaker=character.strip(), text=action.strip(), index=i))
    if not turns:
        return None, errors
    return Session(id=sid, timestamp=None, turns=turns, metadata={"title": title}), errors


def iter_bookmarks(path: Path) -> Iterator[EvalSample | DatasetError]:
    path = Path(path)
    if path.name == CHARACTERS_FILE:
        yield DatasetError(path, None, None, "this is the character list; pass a title2action_series.<work>.json "
                                             "file or the folder holding them")
        return
    if top_level_kind(path) != "object":
        yield DatasetError(path, None, None, "expected a JSON object {title: [{action, character}, ...]}")
        return
    work = work_name(path)
    sessions: list[Session] = []
    seen: set[str] = set()
    try:
        for title, raw in iter_object(path):
            if title in seen:
                yield DatasetError(path, title, None, "duplicate title (the first one is kept)")
                continue
            seen.add(title)
            session, errors = _session(path, work, title, raw)
            yield from errors
            if session is not None:
                sessions.append(session)
    except DatasetError as err:  # broken JSON: the work is incomplete, so none of it is kept
        yield err
        return
    if not sessions:
        yield DatasetError(path, None, None, "no title with valid actions")
        return
    characters, err = _characters(path.parent / CHARACTERS_FILE, work)
    if err is not None:
        yield err
    persona = None
    metadata: dict[str, Any] = {"work": work, "titles": len(sessions)}
    if characters is not None:
        metadata.update(major_characters=characters["major"], minor_characters=characters["minor"])
        if characters["major"]:
            persona = Persona(id=work, name=" & ".join(characters["major"]),
                              description=f"The main characters of the story '{work}'.")
    history = History(id=work, dataset="bookmarks", persona=persona, sessions=sessions, metadata=metadata)
    yield EvalSample(history=history, queries=[])
