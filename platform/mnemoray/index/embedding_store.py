"""A content-addressed, on-disk store of sentence embeddings: (model, text) -> vector.

Evaluations embed the same texts again and again: the main job's dense and hybrid
baselines index the same chunks, every rerun re-embeds a whole dataset, and several Ray
workers may embed the same queries. Keyed by a fingerprint of the model's files (not its
path: a retrained model at the same path gets new keys) and the text's hash, a vector is
computed once per machine (or per shared folder) and read back afterwards.

One SQLite file per model fingerprint, in WAL mode, so the Ray workers of one node can
read and write it at once; a write that loses a race is ignored (same key, same value).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from mnemoray.sqlite_wal import connect_wal

ENV_DIR = "MNEMORAY_EMBEDDING_CACHE"
DEFAULT_DIR = Path("~/.cache/mnemoray/embeddings")
_QUERY_CHUNK = 500  # keys per SELECT (SQLite's bound-parameter limit is far above)
_SMALL_FILE = 1 << 20  # files up to 1 MiB are hashed whole; larger ones by head, tail and size


def resolve_store_dir(setting: str | Path | None) -> Path | None:
    """The folder a config's `embedding_cache` names: 'default' means $MNEMORAY_EMBEDDING_CACHE
    (when set; 'off' there disables it) or ~/.cache/mnemoray/embeddings; None/'off' means no store."""
    if setting is None or str(setting).lower() in ("off", "none", ""):
        return None
    if str(setting) == "default":
        env = os.environ.get(ENV_DIR)
        if env is not None:
            return resolve_store_dir(env if env.lower() != "default" else None)
        return DEFAULT_DIR.expanduser()
    return Path(setting).expanduser()


@lru_cache(maxsize=16)
def model_fingerprint(model_path: str, extra: str = "") -> str:
    """A hash of a model folder's contents (file names, sizes, small files whole, the head and
    tail of large ones) plus `extra` (settings that change the vectors, e.g. max length)."""
    digest = hashlib.sha256(extra.encode())
    root = Path(model_path)
    if not root.is_dir():  # a hub id or a single file: the name is all we know
        digest.update(str(model_path).encode())
        return digest.hexdigest()[:32]
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        size = path.stat().st_size
        digest.update(f"{path.relative_to(root)}\0{size}\0".encode())
        with open(path, "rb") as f:
            if size <= _SMALL_FILE:
                digest.update(f.read())
            else:
                digest.update(f.read(_SMALL_FILE // 2))
                f.seek(-(_SMALL_FILE // 2), os.SEEK_END)
                digest.update(f.read())
    return digest.hexdigest()[:32]


def text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:20]


class EmbeddingStore:
    """Vectors of one model (one fingerprint, one dimension) in one SQLite file."""

    def __init__(self, folder: str | Path, fingerprint: str, dim: int):
        self.path = Path(folder) / f"{fingerprint}.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.dim = dim
        self._local = threading.local()
        self.hits = 0
        self.misses = 0

    def _db(self):
        db = getattr(self._local, "db", None)
        if db is None:
            db = connect_wal(self.path)
            db.execute("CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, vec BLOB NOT NULL) WITHOUT ROWID")
            self._local.db = db
        return db

    def get(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        db = self._db()
        for start in range(0, len(keys), _QUERY_CHUNK):
            chunk = list(keys[start:start + _QUERY_CHUNK])
            marks = ",".join("?" * len(chunk))
            for key, blob in db.execute(f"SELECT key, vec FROM vectors WHERE key IN ({marks})", chunk):
                vec = np.frombuffer(blob, dtype=np.float32)
                if vec.shape == (self.dim,):  # anything else is not ours: recompute it
                    found[bytes(key)] = vec
        return found

    def put(self, items: dict[bytes, np.ndarray]) -> None:
        if not items:
            return
        db = self._db()
        with db:
            db.executemany("INSERT OR IGNORE INTO vectors (key, vec) VALUES (?, ?)",
                           [(k, np.ascontiguousarray(v, dtype=np.float32).tobytes()) for k, v in items.items()])

    def encode_through(self, texts: Sequence[str], encode: Callable[[list[str]], np.ndarray]) -> np.ndarray:
        """Vectors of `texts` in order: stored ones read back, the rest computed by `encode`
        (each distinct text once, in first-seen order) and stored."""
        keys = [text_key(t) for t in texts]
        found = self.get(list(dict.fromkeys(keys)))
        todo: dict[bytes, str] = {}
        for key, text in zip(keys, texts):
            if key not in found and key not in todo:
                todo[key] = text
        self.misses += len(todo)  # texts embedded now (each distinct one once)
        self.hits += len(texts) - len(todo)  # texts served without embedding
        if todo:
            computed = encode(list(todo.values()))
            new = dict(zip(todo, computed))
            self.put(new)
            found.update(new)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)
