"""On-disk response cache: rerunning a job does not pay for the same completion twice.

Content-addressed: the key hashes everything that determines an answer (engine, model,
messages, sampling params, seed, schema) and nothing else (not the request id or its
metadata). SQLite (stdlib) gives atomic writes that several processes or Ray workers
can share; each call opens its own connection so the cache object pickles cleanly.
Only successful results are stored, so failures are retried on the next run.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

from mnemoray.llm.types import ChatRequest, ChatResult, Engine, close_engine
from mnemoray.sqlite_wal import connect_wal

_SCHEMA = "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, result TEXT NOT NULL)"


def cache_key(engine: str, model: str, request: ChatRequest) -> str:
    payload = {
        "engine": engine,
        "model": model,
        "messages": [m.model_dump() for m in request.messages],
        "params": request.params.model_dump(),
        "seed": request.seed,
        "json_schema": request.json_schema,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class ResponseCache:
    """key -> ChatResult JSON in `dir/responses.sqlite`."""

    def __init__(self, dir: Path | str):
        self.dir = Path(dir).expanduser()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "responses.sqlite"
        conn = self._connect()
        try:
            with conn:
                conn.execute(_SCHEMA)
        finally:
            conn.close()

    def _connect(self) -> sqlite3.Connection:
        return connect_wal(self.path)

    def get_many(self, keys: list[str]) -> dict[str, ChatResult]:
        found: dict[str, ChatResult] = {}
        unique = sorted(set(keys))
        conn = self._connect()
        try:
            for start in range(0, len(unique), 500):
                part = unique[start : start + 500]
                rows = conn.execute(
                    f"SELECT key, result FROM responses WHERE key IN ({','.join('?' * len(part))})", part
                ).fetchall()
                found.update({k: ChatResult.model_validate_json(v) for k, v in rows})
        finally:
            conn.close()
        return found

    def put_many(self, items: list[tuple[str, ChatResult]]) -> None:
        rows = [(k, r.model_dump_json()) for k, r in items if r.ok]
        if not rows:
            return
        conn = self._connect()
        try:
            with conn:
                conn.executemany("INSERT OR REPLACE INTO responses (key, result) VALUES (?, ?)", rows)
        finally:
            conn.close()

    def __len__(self) -> int:
        conn = self._connect()
        try:
            return int(conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0])
        finally:
            conn.close()


class CachedEngine:
    """Serve hits from the cache (`cached=True`); send only misses to the wrapped engine."""

    def __init__(self, engine: Engine, cache: ResponseCache):
        self.engine = engine
        self.cache = cache
        self.name = engine.name
        self.model = engine.model

    def generate(self, requests: list[ChatRequest]) -> list[ChatResult]:
        keys = [cache_key(self.name, self.model, r) for r in requests]
        hits = self.cache.get_many(keys)
        results: list[ChatResult | None] = [None] * len(requests)
        misses: list[int] = []
        for i, (req, key) in enumerate(zip(requests, keys)):
            if key in hits:
                results[i] = hits[key].model_copy(update={"id": req.id, "cached": True})
            else:
                misses.append(i)
        if misses:
            fresh = self.engine.generate([requests[i] for i in misses])
            self.cache.put_many([(keys[i], r) for i, r in zip(misses, fresh)])
            for i, r in zip(misses, fresh):
                results[i] = r
        return [r for r in results if r is not None]

    def close(self) -> None:
        """Release the wrapped engine (its connections or engine process), if it holds any."""
        close_engine(self.engine)
