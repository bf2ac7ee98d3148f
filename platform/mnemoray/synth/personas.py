"""Seed personas for synthesis: MSC persona pairs or any JSON/JSONL with a description.

Bad records come back as `DatasetError` values (file, record, field, reason) so a run lists
them and goes on with the rest. Persona ids hash the persona's content, so the same persona
gets the same id in every run and duplicates collapse into one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ijson

from mnemoray.ids import stable_id
from mnemoray.loaders.errors import DatasetError
from mnemoray.loaders.jsonstream import iter_array, top_level_kind
from mnemoray.records import Persona

MSC_SPEAKERS = ("Speaker 1", "Speaker 2")


def persona_id(facts: list[str], description: str) -> str:
    return "p-" + stable_id([f.strip() for f in facts], description.strip())


def _facts(value: Any, file: Path, record: str, field: str) -> list[str] | DatasetError:
    if not isinstance(value, list):
        return DatasetError(file, record, field, f"expected a list of strings, got {type(value).__name__}")
    for i, fact in enumerate(value):
        if not isinstance(fact, str):
            return DatasetError(file, record, f"{field}[{i}]", f"expected a string, got {type(fact).__name__}")
    facts = [f.strip() for f in value if f.strip()]
    if not facts:
        return DatasetError(file, record, field, "no facts (empty persona)")
    return facts


def _from_record(raw: Any, file: Path, record: str) -> Persona | DatasetError:
    """A generic record: {id?, name?, description?, facts?} with a description or facts."""
    if not isinstance(raw, dict):
        return DatasetError(file, record, None, f"expected an object, got {type(raw).__name__}")
    description = raw.get("description", raw.get("persona", ""))
    if not isinstance(description, str):
        return DatasetError(file, record, "description", "expected a string")
    facts: list[str] = []
    if "facts" in raw:
        got = _facts(raw["facts"], file, record, "facts")
        if isinstance(got, DatasetError):
            if description.strip():
                got = []
            else:
                return got
        facts = got
    if not description.strip() and not facts:
        return DatasetError(file, record, "description", "empty persona (no description and no facts)")
    description = description.strip() or " ".join(facts)
    name = raw.get("name") or ""
    given = raw.get("id")
    pid = f"p-{given}" if isinstance(given, (str, int)) and str(given).strip() else persona_id(facts, description)
    return Persona(id=pid, name=str(name), description=description, facts=facts)


def _top_keys(file: Path) -> tuple[list[str], bool]:
    """Top-level keys of a JSON object, read as a stream; True when the file is cut short."""
    keys: list[str] = []
    with open(file, "rb") as f:
        try:
            for prefix, event, value in ijson.parse(f):
                if prefix == "" and event == "map_key":
                    keys.append(value)
        except (ijson.JSONError, ijson.IncompleteJSONError, ValueError):
            return keys, True
    return keys, False


def _iter_msc(file: Path) -> Iterator[Persona | DatasetError]:
    """Pairs streamed split by split, so a truncated file still yields what precedes the cut."""
    splits, _ = _top_keys(file)
    for split in splits:
        count = 0
        try:
            for pair in iter_array(file, f"{split}.item"):
                yield from _msc_pair(pair, file, split, count)
                count += 1
        except DatasetError as err:
            yield DatasetError(file, f"{split}[{count}]", None, err.reason)
            return


def _msc_pair(pair: Any, file: Path, split: str, i: int) -> Iterator[Persona | DatasetError]:
    record = f"{split}[{i}]"
    if not isinstance(pair, dict):
        yield DatasetError(file, record, None, f"expected an object, got {type(pair).__name__}")
        return
    speakers = [s for s in MSC_SPEAKERS if s in pair]
    if not speakers:
        yield DatasetError(file, record, None, "no 'Speaker 1' / 'Speaker 2' facts")
        return
    for speaker in speakers:
        facts = _facts(pair[speaker], file, record, speaker)
        if isinstance(facts, DatasetError):
            yield facts
            continue
        description = " ".join(facts)
        yield Persona(id=persona_id(facts, description), name=f"{split}/{i}/{speaker}",
                      description=description, facts=facts)


def _looks_like_msc(file: Path) -> bool:
    """An object whose first value starts as a list of objects with speaker keys."""
    with open(file, "rb") as f:
        try:
            for prefix, event, value in ijson.parse(f):
                if event == "map_key" and prefix.count(".") == 1 and prefix.endswith(".item"):
                    return value in MSC_SPEAKERS or value == "in_dataset"
                if event in ("string", "number", "boolean", "null") and prefix.count(".") <= 1:
                    return False
        except (ijson.JSONError, ijson.IncompleteJSONError, ValueError):
            return False
    return False


def iter_seed_personas(path: str | Path) -> Iterator[Persona | DatasetError]:
    """Personas (first occurrence of each id) and errors, in file order."""
    file = Path(path)
    if not file.is_file():
        yield DatasetError(file, None, None, "no such persona file")
        return
    seen: set[str] = set()

    def fresh(items: Iterator[Persona | DatasetError]) -> Iterator[Persona | DatasetError]:
        for item in items:
            if isinstance(item, Persona):
                if item.id in seen:
                    continue
                seen.add(item.id)
            yield item

    if file.suffix == ".jsonl":
        yield from fresh(_iter_jsonl(file))
        return
    kind = top_level_kind(file)
    try:
        if kind == "object" and _looks_like_msc(file):
            yield from fresh(_iter_msc(file))
        elif kind == "array":
            yield from fresh(_from_record(raw, file, f"[{i}]") for i, raw in enumerate(iter_array(file)))
        else:
            yield DatasetError(file, None, None, "expected MSC persona pairs ({split: [pairs]}), a JSON array or JSONL")
    except DatasetError as err:  # truncated file: keep what was read, report where it broke
        yield err


def _iter_jsonl(file: Path) -> Iterator[Persona | DatasetError]:
    with open(file, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as err:
                yield DatasetError(file, f"line {lineno}", None, f"malformed JSON ({err.msg})")
                continue
            yield _from_record(raw, file, f"line {lineno}")


def load_seed_personas(path: str | Path, limit: int | None = None) -> tuple[list[Persona], list[DatasetError]]:
    """The first `limit` valid personas and every error met before reaching them."""
    personas: list[Persona] = []
    errors: list[DatasetError] = []
    for item in iter_seed_personas(path):
        if isinstance(item, DatasetError):
            errors.append(item)
        else:
            personas.append(item)
            if limit is not None and len(personas) >= limit:
                break
    return personas, errors
