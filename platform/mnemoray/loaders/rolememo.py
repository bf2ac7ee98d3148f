"""Datasets written by `mnemoray synth rolememo` (the `dataset/` folder, or the run folder).

Each history is a persona's sessions in time order: dialogues carrying fact fragments,
distractor sessions, and one query session per ground-truth query at the end. A query
sees the sessions before its own; gold = the user turns holding its two fragments.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq

from mnemoray.loaders.errors import DatasetError
from mnemoray.records import EvalSample, EvidenceQuery, History, Persona, Session, Turn, make_turn_id

FILES = ("personas.parquet", "sessions.parquet", "histories.parquet", "ground_truth.parquet")


def dataset_dir(path: Path) -> Path:
    path = Path(path)
    return path / "dataset" if (path / "dataset" / "histories.parquet").is_file() else path


def _read(folder: Path, name: str):
    file = folder / name
    if not file.is_file():
        raise DatasetError(file, None, None, "missing (not a `mnemoray synth rolememo` dataset folder?)")
    try:
        return pq.read_table(file)
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise DatasetError(file, None, None, f"unreadable Parquet ({err})") from None


def iter_rolememo(path: Path) -> Iterator[EvalSample | DatasetError]:
    folder = dataset_dir(path)
    tables = {}
    for name in FILES:
        try:
            tables[name] = _read(folder, name)
        except DatasetError as err:
            yield err
            return
    personas = {p["id"]: p for p in tables["personas.parquet"].to_pylist()}
    sessions = {s["id"]: s for s in tables["sessions.parquet"].to_pylist()}
    truth = collections.defaultdict(list)
    for q in tables["ground_truth.parquet"].to_pylist():
        truth[q["history_id"]].append(q)
    hist_file = folder / "histories.parquet"
    for h in tables["histories.parquet"].to_pylist():
        try:
            yield _sample(h, personas, sessions, truth[h["id"]], hist_file)
        except DatasetError as err:
            yield err


def _sample(h: dict, personas: dict, sessions: dict, queries: list[dict], file: Path) -> EvalSample:
    out: list[Session] = []
    position: dict[str, int] = {}
    for i, slot in enumerate(h["sessions"] or []):
        source = sessions.get(slot["source_id"])
        if source is None:
            raise DatasetError(file, h["id"], f"sessions[{i}].source_id", f"unknown session '{slot['source_id']}'")
        sid = slot["session_id"]
        turns = [Turn(id=make_turn_id(sid, t["index"]), speaker=t["speaker"], text=t["text"], index=t["index"],
                      is_query=bool(t["is_query"]),
                      metadata={"fragment_id": t["fragment_id"]} if t.get("fragment_id") else {})
                 for t in source["turns"]]
        position[sid] = i
        out.append(Session(id=sid, timestamp=slot["timestamp"], turns=turns,
                           metadata={"kind": slot["kind"], "topic": source.get("topic") or ""}))
    p = personas.get(h["persona_id"]) or {"id": h["persona_id"]}
    persona = Persona(id=p["id"], name=p.get("name") or "", description=p.get("description") or "",
                      facts=list(p.get("facts") or []))
    evidence = []
    for q in queries:
        if q["session_id"] not in position:
            raise DatasetError(file, h["id"], "queries", f"query '{q['id']}' has no query session in the history")
        evidence.append(EvidenceQuery(
            id=q["id"], history_id=h["id"], text=q["question"], gold_ids=list(q["evidence_turn_ids"]),
            gold_level="turn", category=q["insight_type"], answer=q["core_insight"],
            visible_sessions=position[q["session_id"]],
            metadata={"core_fragments": list(q["core_fragments"]), "connector": q["connector"]},
        ))
    history = History(id=h["id"], dataset="rolememo", persona=persona, sessions=out,
                      metadata={"total_tokens": h["total_tokens"], "target_tokens": h["target_tokens"]})
    return EvalSample(history=history, queries=evidence)


def load_ground_truth(path: Path) -> list[dict]:
    """The ground-truth JSONL rows ({id, persona, core_insight, core_fragments, ...})."""
    with open(dataset_dir(path) / "ground_truth.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
