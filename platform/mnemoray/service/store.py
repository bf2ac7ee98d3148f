"""One tenant's durable memory: a SQLite file in WAL mode, every commit fsynced.

Tables:
    state     one row: the version (bumped by every committed change), the framework
              name and its snapshot (JSON, `codec.py`)
    sessions  every session received: its payload, a digest of it, status
              (pending / done / failed), attempts, last error, and the ops it produced
    items     every memory item the framework ever held, with provenance, its state
              (live / deleted by the tenant / removed by the framework) and, for a
              duplicate folded into an earlier item, the id of that item (`alias_of`)
    history   every change to an item, in order

A write is acknowledged only after its transaction commits, and a session's ops, items,
history and the framework snapshot change in one transaction, so a crash leaves either
all of it or none. Two connections: writes go through one (explicit `BEGIN IMMEDIATE`
transactions, which also serialise writers of other processes on the same file); reads
use the other and see committed data only.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mnemoray.service.tenants import connect

SCHEMA = """
CREATE TABLE IF NOT EXISTS state (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL,
    framework TEXT NOT NULL, snapshot TEXT);
CREATE TABLE IF NOT EXISTS sessions (session_id TEXT PRIMARY KEY, seq INTEGER NOT NULL UNIQUE,
    digest TEXT NOT NULL, payload TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT, result TEXT, created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS items (id TEXT PRIMARY KEY, position INTEGER NOT NULL, text TEXT NOT NULL,
    kind TEXT NOT NULL, session_id TEXT, turn_ids TEXT NOT NULL, timestamp TEXT, metadata TEXT NOT NULL,
    alias_of TEXT, state TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL);
CREATE INDEX IF NOT EXISTS items_position ON items (state, position);
CREATE TABLE IF NOT EXISTS history (seq INTEGER PRIMARY KEY AUTOINCREMENT, item_id TEXT NOT NULL,
    event TEXT NOT NULL, text TEXT, session_id TEXT, at REAL NOT NULL, detail TEXT);
CREATE INDEX IF NOT EXISTS history_item ON history (item_id, seq);
"""

ITEM_COLUMNS = ("id", "position", "text", "kind", "session_id", "turn_ids", "timestamp", "metadata", "alias_of",
                "state", "created", "updated")
SESSION_COLUMNS = ("session_id", "seq", "digest", "payload", "status", "attempts", "error", "result", "created",
                   "updated")
HISTORY_COLUMNS = ("seq", "item_id", "event", "text", "session_id", "at", "detail")
_JSON_ITEM = ("turn_ids", "metadata")
HISTORY_INSERT = "INSERT INTO history (item_id, event, text, session_id, at, detail) VALUES (?, ?, ?, ?, ?, ?)"


def _item_row(row: tuple) -> dict[str, Any]:
    out = dict(zip(ITEM_COLUMNS, row))
    for key in _JSON_ITEM:
        out[key] = json.loads(out[key])
    return out


def _session_row(row: tuple) -> dict[str, Any]:
    out = dict(zip(SESSION_COLUMNS, row))
    out["payload"] = json.loads(out["payload"])
    out["result"] = json.loads(out["result"]) if out["result"] else None
    return out


def _history_row(row: tuple) -> dict[str, Any]:
    out = dict(zip(HISTORY_COLUMNS, row))
    out["detail"] = json.loads(out["detail"]) if out["detail"] else None
    return out


class Tx:
    """The write transaction's statements (used only inside `TenantStore.write()`)."""

    def __init__(self, conn):
        self.conn = conn
        self.now = time.time()

    def state(self) -> tuple[int, str | None, str | None]:
        row = self.conn.execute("SELECT version, framework, snapshot FROM state WHERE id = 1").fetchone()
        return row if row else (0, None, None)

    def set_state(self, version: int, framework: str, snapshot: str | None) -> None:
        self.conn.execute("INSERT INTO state VALUES (1, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                          "version = excluded.version, framework = excluded.framework, snapshot = excluded.snapshot",
                          (version, framework, snapshot))

    def bump(self) -> int:
        version, framework, snapshot = self.state()
        self.set_state(version + 1, framework or "", snapshot)
        return version + 1

    def session(self, session_id: str) -> dict[str, Any] | None:
        row = self.conn.execute(f"SELECT {', '.join(SESSION_COLUMNS)} FROM sessions WHERE session_id = ?",
                                (session_id,)).fetchone()
        return _session_row(row) if row else None

    def add_session(self, session_id: str, digest: str, payload: dict[str, Any]) -> None:
        (seq,) = self.conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM sessions").fetchone()
        self.conn.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, 'pending', 0, NULL, NULL, ?, ?)",
                          (session_id, seq, digest, json.dumps(payload), self.now, self.now))

    def finish_session(self, session_id: str, status: str, result: dict[str, Any] | None, error: str | None,
                       attempts: int) -> None:
        self.conn.execute("UPDATE sessions SET status = ?, result = ?, error = ?, attempts = ?, updated = ? "
                          "WHERE session_id = ?",
                          (status, json.dumps(result) if result is not None else None, error, attempts, self.now,
                           session_id))

    def put_item(self, item: dict[str, Any]) -> None:
        row = {**item, "turn_ids": json.dumps(item["turn_ids"]), "metadata": json.dumps(item["metadata"])}
        row.setdefault("created", self.now)
        row["updated"] = self.now
        if row.get("position") is None:
            (row["position"],) = self.conn.execute("SELECT COALESCE(MAX(position), 0) + 1 FROM items").fetchone()
        self.conn.execute(f"INSERT OR REPLACE INTO items VALUES ({', '.join('?' * len(ITEM_COLUMNS))})",
                          tuple(row[c] for c in ITEM_COLUMNS))

    def item(self, item_id: str) -> dict[str, Any] | None:
        row = self.conn.execute(f"SELECT {', '.join(ITEM_COLUMNS)} FROM items WHERE id = ?", (item_id,)).fetchone()
        return _item_row(row) if row else None

    def set_item_state(self, item_id: str, state: str) -> None:
        self.conn.execute("UPDATE items SET state = ?, updated = ? WHERE id = ?", (state, self.now, item_id))

    def log(self, item_id: str, event: str, text: str | None, session_id: str | None,
            detail: dict[str, Any] | None = None) -> None:
        detail_text = json.dumps(detail) if detail else None
        self.conn.execute(HISTORY_INSERT, (item_id, event, text, session_id, self.now, detail_text))

    def replace_all(self, items: list[dict], sessions: list[dict], history: list[dict]) -> None:
        """Every table's rows at once (import)."""
        for table in ("items", "sessions", "history"):
            self.conn.execute(f"DELETE FROM {table}")
        for item in items:
            self.put_item(item)
        for s in sessions:
            self.conn.execute(f"INSERT INTO sessions VALUES ({', '.join('?' * len(SESSION_COLUMNS))})",
                              (s["session_id"], s["seq"], s["digest"], json.dumps(s["payload"]), s["status"],
                               s["attempts"], s["error"], json.dumps(s["result"]) if s["result"] is not None else None,
                               s["created"], s["updated"]))
        for h in history:
            self.conn.execute(HISTORY_INSERT, (h["item_id"], h["event"], h["text"], h["session_id"], h["at"],
                               json.dumps(h["detail"]) if h["detail"] else None))


class TenantStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = connect(self.path)
        self._writer.executescript(SCHEMA)
        self._reader = connect(self.path)
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()

    def close(self) -> None:
        with self._write_lock, self._read_lock:
            self._writer.close()
            self._reader.close()

    @contextlib.contextmanager
    def write(self) -> Iterator[Tx]:
        """One transaction: committed (and fsynced) on leaving, rolled back on an exception."""
        with self._write_lock:
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield Tx(self._writer)
            except BaseException:
                self._writer.execute("ROLLBACK")
                raise
            self._writer.execute("COMMIT")

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._read_lock:
            return self._reader.execute(sql, args).fetchall()

    def state(self) -> tuple[int, str | None, str | None]:
        rows = self._read("SELECT version, framework, snapshot FROM state WHERE id = 1")
        return rows[0] if rows else (0, None, None)

    def version(self) -> int:
        rows = self._read("SELECT version FROM state WHERE id = 1")
        return rows[0][0] if rows else 0

    def items(self, states: tuple[str, ...] = ("live",), offset: int = 0, limit: int | None = None,
              canonical_only: bool = True) -> list[dict[str, Any]]:
        marks = ", ".join("?" * len(states))
        sql = f"SELECT {', '.join(ITEM_COLUMNS)} FROM items WHERE state IN ({marks})"
        if canonical_only:
            sql += " AND alias_of IS NULL"
        sql += " ORDER BY position LIMIT ? OFFSET ?"
        return [_item_row(r) for r in self._read(sql, (*states, -1 if limit is None else limit, offset))]

    def all_items(self) -> list[dict[str, Any]]:
        return [_item_row(r) for r in self._read(f"SELECT {', '.join(ITEM_COLUMNS)} FROM items ORDER BY position")]

    def count(self) -> int:
        return self._read("SELECT COUNT(*) FROM items WHERE state = 'live' AND alias_of IS NULL")[0][0]

    def item(self, item_id: str) -> dict[str, Any] | None:
        rows = self._read(f"SELECT {', '.join(ITEM_COLUMNS)} FROM items WHERE id = ?", (item_id,))
        return _item_row(rows[0]) if rows else None

    def history(self, item_id: str) -> list[dict[str, Any]]:
        return [_history_row(r) for r in self._read(
            f"SELECT {', '.join(HISTORY_COLUMNS)} FROM history WHERE item_id = ? ORDER BY seq", (item_id,))]

    def all_history(self) -> list[dict[str, Any]]:
        return [_history_row(r) for r in self._read(f"SELECT {', '.join(HISTORY_COLUMNS)} FROM history ORDER BY seq")]

    def session(self, session_id: str) -> dict[str, Any] | None:
        rows = self._read(f"SELECT {', '.join(SESSION_COLUMNS)} FROM sessions WHERE session_id = ?", (session_id,))
        return _session_row(rows[0]) if rows else None

    def sessions(self, status: str | None = None) -> list[dict[str, Any]]:
        sql = f"SELECT {', '.join(SESSION_COLUMNS)} FROM sessions"
        args: tuple = ()
        if status is not None:
            sql += " WHERE status = ?"
            args = (status,)
        return [_session_row(r) for r in self._read(sql + " ORDER BY seq", args)]
