"""Tenants and their API keys, in `<data_dir>/tenants.sqlite` (WAL).

A key is 32 random bytes, returned once when the tenant is created and stored only as its
SHA-256 (keys are random, so a plain hash is enough: there is nothing to brute-force).
Every request's tenant is the one whose key hash matches; nothing a client sends in a
body can name another. The admin key (from the environment or a file) can create and
delete tenants and nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from mnemoray.service.schemas import ServiceError, not_found

ADMIN_KEY_ENV = "MNEMORAY_ADMIN_KEY"
KEY_PREFIX = "mr-"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def load_admin_key(key_file: str | Path | None) -> str:
    """The admin key: the file named in the config, else `$MNEMORAY_ADMIN_KEY`."""
    if key_file is not None:
        path = Path(key_file).expanduser()
        try:
            key = path.read_text().strip()
        except OSError as err:
            raise ValueError(f"admin key file {path}: {err.strerror or err}") from None
        source = str(path)
    else:
        key = os.environ.get(ADMIN_KEY_ENV, "").strip()
        source = f"${ADMIN_KEY_ENV}"
    if len(key) < 16:
        raise ValueError(f"admin key from {source} is missing or shorter than 16 characters")
    return key


@dataclass(frozen=True)
class Tenant:
    name: str
    framework: str
    created: float


def connect(path: Path) -> sqlite3.Connection:
    """A WAL connection usable from the worker threads of one process, every commit
    fsynced (synchronous=FULL), transactions managed explicitly (autocommit mode)."""
    conn = sqlite3.connect(path, timeout=60.0, check_same_thread=False, isolation_level=None)
    for attempt in range(50):
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:  # a fresh file opened by several processes at once
            if "locked" not in str(exc) or attempt == 49:
                conn.close()
                raise
            time.sleep(0.01 * (attempt + 1))
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=60000")
    return conn


class TenantRegistry:
    """The tenant table; thread-safe (one connection behind a lock)."""

    def __init__(self, data_dir: str | Path, admin_key: str | None):
        """`admin_key` None: no key is the admin's (the store deployment only reads tenants)."""
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._admin_hash = hash_key(admin_key) if admin_key else None
        self._lock = threading.Lock()
        self._conn = connect(self.data_dir / "tenants.sqlite")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS tenants (name TEXT PRIMARY KEY, key_hash TEXT NOT NULL UNIQUE, "
            "framework TEXT NOT NULL, created REAL NOT NULL)"
        )

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def is_admin(self, key: str | None) -> bool:
        return key is not None and self._admin_hash is not None and hmac.compare_digest(hash_key(key), self._admin_hash)

    def tenant_dir(self, name: str) -> Path:
        return self.data_dir / "tenants" / name

    def create(self, name: str, framework: str) -> str:
        """Add a tenant; returns its API key (the only time it is shown)."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        with self._lock:
            try:
                self._conn.execute("INSERT INTO tenants VALUES (?, ?, ?, ?)",
                                   (name, hash_key(key), framework, time.time()))
            except sqlite3.IntegrityError:
                raise ServiceError(409, f"tenant {name!r} already exists", "conflict_error") from None
        return key

    def delete(self, name: str) -> None:
        """Remove a tenant, its key and its data folder."""
        with self._lock:
            cur = self._conn.execute("DELETE FROM tenants WHERE name = ?", (name,))
        if cur.rowcount == 0:
            raise not_found(f"tenant {name!r}")
        shutil.rmtree(self.tenant_dir(name), ignore_errors=True)

    def get(self, name: str) -> Tenant | None:
        with self._lock:
            row = self._conn.execute("SELECT name, framework, created FROM tenants WHERE name = ?", (name,)).fetchone()
        return Tenant(*row) if row else None

    def authenticate(self, key: str | None) -> Tenant | None:
        """The tenant a key belongs to, or None (the admin key belongs to none)."""
        if not key:
            return None
        with self._lock:
            row = self._conn.execute("SELECT name, framework, created FROM tenants WHERE key_hash = ?",
                                     (hash_key(key),)).fetchone()
        return Tenant(*row) if row else None

    def names(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._conn.execute("SELECT name FROM tenants ORDER BY name")]
