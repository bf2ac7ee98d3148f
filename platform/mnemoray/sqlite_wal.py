"""One way to open the SQLite files that several processes share (response and embedding caches).

WAL mode lets readers and one writer work at once. Switching a fresh file to WAL needs
a moment of exclusive access, and SQLite may answer "database is locked" at once (without
waiting for its busy timeout) when several processes open the same new file together,
so the switch is retried briefly; every later statement waits up to `timeout` seconds.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

_SWITCH_TRIES = 50


def connect_wal(path: str | Path, timeout: float = 60.0) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=timeout)
    for attempt in range(_SWITCH_TRIES):
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == _SWITCH_TRIES - 1:
                conn.close()
                raise
            time.sleep(0.01 * (attempt + 1))
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn
