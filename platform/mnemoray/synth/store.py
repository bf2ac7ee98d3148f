"""Per-stage Parquet outputs with a done manifest, so a killed run resumes without duplicates.

A stage folder holds `kept/`, `rejects/` and `done/`, one part file of each per group of
finished inputs, all with the same part name. Each file is written to a temporary name and
renamed; the `done` part goes last, so a part counts only when all three exist. On start
a stage deletes parts without a `done` file (a crash between writes), then skips every
input id listed in `done`. Output ids are deterministic, so redoing a lost part rewrites
the same records.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mnemoray.ids import stable_id

KEPT_SCHEMA = pa.schema([("id", pa.string()), ("persona_id", pa.string()), ("record", pa.string())])
REJECT_SCHEMA = pa.schema([
    ("id", pa.string()), ("persona_id", pa.string()), ("stage", pa.string()), ("input_id", pa.string()),
    ("reason", pa.string()), ("detail", pa.string()), ("raw", pa.string()),
])
DONE_SCHEMA = pa.schema([
    ("input_id", pa.string()), ("persona_id", pa.string()), ("n_kept", pa.int64()), ("n_rejected", pa.int64()),
    ("calls", pa.int64()), ("attempts", pa.int64()), ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()), ("latency_s", pa.float64()),
])
PARTS = ("kept", "rejects", "done")


def write_table_atomic(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


class StageStore:
    def __init__(self, root: Path, name: str):
        self.name = name
        self.dir = Path(root) / "stages" / name

    def folder(self, part: str) -> Path:
        return self.dir / part

    def files(self, part: str) -> list[Path]:
        folder = self.folder(part)
        return sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []

    def clean_orphans(self) -> int:
        """Delete temp files and parts whose `done` file is missing; returns files removed."""
        done = {p.name for p in self.files("done")}
        removed = 0
        for part in PARTS:
            folder = self.folder(part)
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                if path.name.endswith(".tmp") or (part != "done" and path.name not in done):
                    path.unlink()
                    removed += 1
        return removed

    def done_ids(self) -> set[str]:
        ids: set[str] = set()
        for path in self.files("done"):
            ids.update(pq.read_table(path, columns=["input_id"]).column(0).to_pylist())
        return ids

    def write_part(self, kept: list[dict[str, Any]], rejects: list[dict[str, Any]], done: list[dict[str, Any]]) -> str:
        """Write one part (kept, rejects, then done); the name hashes the finished input ids."""
        name = f"part-{stable_id(sorted(d['input_id'] for d in done))}.parquet"
        write_table_atomic(pa.Table.from_pylist(kept, schema=KEPT_SCHEMA), self.folder("kept") / name)
        write_table_atomic(pa.Table.from_pylist(rejects, schema=REJECT_SCHEMA), self.folder("rejects") / name)
        write_table_atomic(pa.Table.from_pylist(done, schema=DONE_SCHEMA), self.folder("done") / name)
        return name

    def replace_all(
        self, kept: list[dict[str, Any]], rejects: list[dict[str, Any]], done: list[dict[str, Any]]
    ) -> None:
        """Make this stage exactly one part (inputs computed on the driver, e.g. personas)."""
        for part in PARTS:
            for path in self.files(part):
                path.unlink()
        self.write_part(kept, rejects, done)

    def read(self, part: str, columns: list[str] | None = None) -> pa.Table:
        files = self.files(part)
        schema = {"kept": KEPT_SCHEMA, "rejects": REJECT_SCHEMA, "done": DONE_SCHEMA}[part]
        if not files:
            return schema.empty_table() if columns is None else schema.empty_table().select(columns)
        return pa.concat_tables(pq.read_table(p, columns=columns) for p in files)

    def iter_records(self, batch_rows: int = 1024) -> Iterator[dict[str, Any]]:
        """Kept records one by one, streamed part by part (memory stays bounded)."""
        for path in self.files("kept"):
            for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=["record"]):
                for raw in batch.column(0).to_pylist():
                    yield json.loads(raw)

    def log_run(self, info: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "runs.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}) + "\n")

    def runs(self) -> list[dict[str, Any]]:
        return read_jsonl(self.dir / "runs.jsonl")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a small JSONL log; none if it does not exist yet."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def expand(rows: Iterable[dict[str, Any]], stage: str) -> tuple[list[dict], list[dict], list[dict]]:
    """Worker output rows (one per finished input) as kept, reject and done rows."""
    kept, rejects, done = [], [], []
    for row in rows:
        records = json.loads(row["kept"])
        bad = json.loads(row["rejects"])
        kept += [{"id": r["id"], "persona_id": r.get("persona_id", ""), "record": json.dumps(r, ensure_ascii=False)}
                 for r in records]
        rejects += [{**r, "stage": stage, "input_id": row["input_id"]} for r in bad]
        done.append({"input_id": row["input_id"], "persona_id": row["persona_id"], "n_kept": len(records),
                     "n_rejected": len(bad), "calls": int(row["calls"]), "attempts": int(row["attempts"]),
                     "prompt_tokens": int(row["prompt_tokens"]), "completion_tokens": int(row["completion_tokens"]),
                     "latency_s": float(row["latency_s"])})
    return kept, rejects, done
