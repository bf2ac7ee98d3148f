"""The finished dataset: typed Parquet tables the evaluation harness loads directly.

`dataset/` holds personas, sessions (dialogues, the distractor pool and query sessions,
each with its turns), histories (per persona: session references in time order with
timestamps and token counts), ground truth (one row per query, also as JSONL) and every
reject of every stage. It is rebuilt from the stage outputs on each run and swapped in
whole, so it never mixes two runs.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mnemoray.config.synth import RoleMemoConfig
from mnemoray.records import make_turn_id
from mnemoray.synth.store import REJECT_SCHEMA, StageStore

TURN = pa.struct([("id", pa.string()), ("speaker", pa.string()), ("text", pa.string()), ("index", pa.int32()),
                  ("is_query", pa.bool_()), ("fragment_id", pa.string())])
SESSION_SCHEMA = pa.schema([("id", pa.string()), ("kind", pa.string()), ("persona_id", pa.string()),
                            ("topic", pa.string()), ("turns", pa.list_(TURN)), ("tokens", pa.int64())])
SLOT = pa.struct([("session_id", pa.string()), ("source_id", pa.string()), ("kind", pa.string()),
                  ("timestamp", pa.string()), ("tokens", pa.int64())])
HISTORY_SCHEMA = pa.schema([("id", pa.string()), ("persona_id", pa.string()), ("sessions", pa.list_(SLOT)),
                            ("total_tokens", pa.int64()), ("target_tokens", pa.int64()), ("n_queries", pa.int64()),
                            ("distractor_repeats", pa.int64()), ("dropped_dialogues", pa.list_(pa.string()))])
TRUTH_SCHEMA = pa.schema([("id", pa.string()), ("history_id", pa.string()), ("persona_id", pa.string()),
                          ("persona", pa.string()), ("question", pa.string()), ("core_insight", pa.string()),
                          ("core_fragments", pa.list_(pa.string())), ("insight_type", pa.string()),
                          ("connector", pa.string()), ("evidence_turn_ids", pa.list_(pa.string())),
                          ("session_id", pa.string()), ("dialogue_id", pa.string())])
PERSONA_SCHEMA = pa.schema([("id", pa.string()), ("name", pa.string()), ("description", pa.string()),
                            ("facts", pa.list_(pa.string()))])
REJECT_STAGES = ("personas", "insights", "insight_check", "fact_queries", "closed_book", "necessity_check",
                 "dialogues", "difficulty_check", "safety_check", "distractors")
WRITE_ROWS = 256


def dialogue_turns(rounds: list[dict[str, str]], session_id: str,
                   fragments: dict[int, str] | None = None) -> list[dict[str, Any]]:
    """Rounds as turns: user turn 2r, assistant turn 2r+1 (the ids evidence refers to)."""
    fragments = fragments or {}
    turns = []
    for r, pair in enumerate(rounds):
        for offset, speaker in ((0, "user"), (1, "assistant")):
            index = 2 * r + offset
            turns.append({"id": make_turn_id(session_id, index), "speaker": speaker, "text": pair[speaker],
                          "index": index, "is_query": False,
                          "fragment_id": fragments.get(r) if speaker == "user" else None})
    return turns


class _Writer:
    """Streams rows into one Parquet file in row groups of WRITE_ROWS."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.path, self.schema, self.rows, self.count = path, schema, [], 0
        self.writer = pq.ParquetWriter(path, schema)

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self.count += 1
        if len(self.rows) >= WRITE_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.writer.write_table(pa.Table.from_pylist(self.rows, schema=self.schema))
            self.rows = []

    def close(self) -> None:
        self.flush()
        self.writer.close()


def _histories(cfg: RoleMemoConfig, personas: frozenset[str]) -> Iterator[dict[str, Any]]:
    for h in StageStore(cfg.out, "histories").iter_records():
        if h["persona_id"] in personas:
            yield h


def export_dataset(cfg: RoleMemoConfig, personas: frozenset[str]) -> dict[str, Any]:
    out = Path(cfg.out)
    tmp = out / ".dataset.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    summary: dict[str, Any] = {"sessions": {}, "history_tokens": [], "queries": 0, "histories": 0}

    people = _Writer(tmp / "personas.parquet", PERSONA_SCHEMA)
    for p in StageStore(cfg.out, "personas").iter_records():
        people.add({k: p.get(k) for k in ("id", "name", "description", "facts")})
    people.close()

    sessions = _Writer(tmp / "sessions.parquet", SESSION_SCHEMA)
    for d in StageStore(cfg.out, "safety_check").iter_records():
        if d["persona_id"] not in personas:
            continue
        frags = {int(p["round"]): p["fragment_id"] for p in d["placements"]}
        sessions.add({"id": d["id"], "kind": "dialogue", "persona_id": d["persona_id"], "topic": d["topic"],
                      "turns": dialogue_turns(d["rounds"], d["id"], frags), "tokens": d["tokens"]})
    for d in StageStore(cfg.out, "distractors").iter_records():
        sessions.add({"id": d["id"], "kind": "distractor", "persona_id": "", "topic": d["topic"],
                      "turns": dialogue_turns(d["rounds"], d["id"]), "tokens": d["tokens"]})

    histories = _Writer(tmp / "histories.parquet", HISTORY_SCHEMA)
    truth = _Writer(tmp / "ground_truth.parquet", TRUTH_SCHEMA)
    with open(tmp / "ground_truth.jsonl", "w", encoding="utf-8") as jsonl:
        for h in _histories(cfg, personas):
            histories.add({"id": h["id"], "persona_id": h["persona_id"], "sessions": h["sessions"],
                           "total_tokens": h["total_tokens"], "target_tokens": h["target_tokens"],
                           "n_queries": len(h["queries"]), "distractor_repeats": h["distractor_repeats"],
                           "dropped_dialogues": h["dropped_dialogues"]})
            summary["history_tokens"].append(h["total_tokens"])
            tokens = {s["session_id"]: s["tokens"] for s in h["sessions"]}
            for q in h["queries"]:
                turn = {"id": make_turn_id(q["session_id"], 0), "speaker": "user", "text": q["question"], "index": 0,
                        "is_query": True, "fragment_id": None}
                sessions.add({"id": q["session_id"], "kind": "query", "persona_id": h["persona_id"], "topic": "",
                              "turns": [turn], "tokens": tokens.get(q["session_id"], 0)})
                row = {"id": q["id"], "history_id": h["id"], "persona_id": h["persona_id"],
                       "persona": h["persona"].get("description", ""), "question": q["question"],
                       "core_insight": q["core_insight"], "core_fragments": q["core_fragments"],
                       "insight_type": q["insight_type"], "connector": q["connector"],
                       "evidence_turn_ids": q["evidence_turn_ids"], "session_id": q["session_id"],
                       "dialogue_id": q["dialogue_id"]}
                truth.add(row)
                jsonl.write(json.dumps(row, ensure_ascii=False) + "\n")
            summary["queries"] += len(h["queries"])
            summary["histories"] += 1
    for writer in (sessions, histories, truth):
        writer.close()
    summary["sessions"]["written"] = sessions.count

    rejects = [StageStore(cfg.out, s).read("rejects") for s in REJECT_STAGES]
    pq.write_table(pa.concat_tables([t.cast(REJECT_SCHEMA) for t in rejects]), tmp / "rejects.parquet")

    final = out / "dataset"
    old = out / ".dataset.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return summary
