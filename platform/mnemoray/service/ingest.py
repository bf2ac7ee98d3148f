"""A tenant's memory: sessions go through the tenant's memory framework and land in its
store in one transaction; searches read the committed framework state.

How a session is written (`TenantMemory.add_session`):
1. the raw session is committed as `pending` (so it survives a crash from here on);
2. the pending sessions are applied in arrival order, each in one `BEGIN IMMEDIATE`
   transaction: a *copy* of the framework (restored from the committed snapshot) ingests
   the session, then the item changes, their history, the session's ops and the new
   snapshot commit together; only then does the copy replace the framework searches use;
3. if the framework raises, or a memory-model call fails (the framework's trajectory log
   counts a failure), nothing is written: the session stays `pending` with the error and
   its attempt count, and later sessions queue behind it until a retry succeeds (after
   `max_attempts` it is `failed` and the queue moves on; posting it again re-queues it).

Dedup: writes of one tenant are serialised (a lock here, the write transaction across
processes), the same `session_id` twice is applied once (a different body under the same
id is a 409), and an item whose normalised text equals a live item's is folded into that
item (its provenance widens; the new id becomes an alias hidden from listings and
results), so concurrent adds of the same facts never leave duplicates.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mnemoray.memory.base import MemoryFramework
from mnemoray.memory.ops import normalize_text, ordered_union
from mnemoray.records import MemoryItem, Persona, Session, Turn, make_turn_id
from mnemoray.service import codec
from mnemoray.service.schemas import ImportIn, ServiceError, SessionIn, not_found
from mnemoray.service.store import TenantStore, Tx

EXPORT_FORMAT = "mnemoray-memory/1"
MakeFramework = Callable[[str], MemoryFramework]  # framework name -> a fresh instance


def to_session(body: SessionIn) -> tuple[Session, Persona | None]:
    turns = [Turn(id=make_turn_id(body.session_id, i), speaker=t.speaker, text=t.text, index=i)
             for i, t in enumerate(body.turns)]
    session = Session(id=body.session_id, timestamp=body.date, turns=turns)
    persona = None
    if body.persona is not None:
        p = body.persona
        persona = Persona(id=p.id or "persona", name=p.name, description=p.description, facts=p.facts)
    return session, persona


def _digest(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _failures(framework: MemoryFramework) -> int:
    log = getattr(framework, "log", None)
    return int(log.counts.get("failures", 0)) if log is not None else 0


def public_item(row: dict[str, Any], score: float | None = None) -> dict[str, Any]:
    out = {"id": row["id"], "text": row["text"], "kind": row["kind"], "session_id": row["session_id"],
           "turn_ids": row["turn_ids"], "timestamp": row["timestamp"],
           "sessions": row["metadata"].get("sessions", [row["session_id"]] if row["session_id"] else [])}
    if score is not None:
        out["score"] = score
    return out


class _View:
    """The committed state searches read: swapped whole, never mutated after publishing."""

    def __init__(self, version: int, framework: MemoryFramework, snapshot: str | None, rows: dict[str, dict],
                 aliases: dict[str, str]):
        self.version = version
        self.framework = framework
        self.snapshot = snapshot
        self.rows = rows  # live canonical items by id
        self.aliases = aliases  # folded duplicate id -> canonical id
        self.fw_items = {it.id: it for it in framework.memory_items()}
        self.hidden = len(self.fw_items) - len(rows)


class TenantMemory:
    def __init__(self, folder: str | Path, framework: str, make_framework: MakeFramework, max_attempts: int = 5):
        self.folder = Path(folder)
        self.framework_name = framework
        self._make = make_framework
        self.max_attempts = max_attempts
        self.store = TenantStore(self.folder / "memory.sqlite")
        self._write_lock = threading.Lock()
        self._view_lock = threading.Lock()
        with self.store.write() as tx:
            version, name, _ = tx.state()
            if name is None:
                tx.set_state(0, framework, None)
            elif name != framework:
                raise ValueError(f"{self.folder}: memory of framework {name!r}, not {framework!r}")
        self._view: _View | None = None
        self.refresh()

    def close(self) -> None:
        self.store.close()

    # -- committed state -------------------------------------------------------------
    def _build_view(self, version: int, snapshot: str | None) -> _View:
        framework = self._make(self.framework_name)
        if snapshot:
            framework.restore(codec.loads(snapshot))
        return self._view_of(version, framework, snapshot)

    def _view_of(self, version: int, framework: MemoryFramework, snapshot: str | None) -> _View:
        rows, aliases = {}, {}
        for row in self.store.all_items():
            if row["alias_of"] is not None:
                aliases[row["id"]] = row["alias_of"]
            elif row["state"] == "live":
                rows[row["id"]] = row
        view = _View(version, framework, snapshot, rows, aliases)
        if view.fw_items:
            framework.retrieve("warm up", 1)  # build lazy indexes now, so concurrent searches only read
        return view

    def refresh(self) -> _View:
        """The view of the newest committed version (rebuilt when another writer moved it)."""
        version = self.store.version()
        view = self._view
        if view is not None and view.version == version:
            return view
        with self._view_lock:
            if self._view is not None and self._view.version == self.store.version():
                return self._view
            version, _, snapshot = self.store.state()
            self._view = self._build_view(version, snapshot)
            return self._view

    # -- reads -----------------------------------------------------------------------
    def search(self, query: str, k: int) -> list[dict[str, Any]]:
        view = self.refresh()
        if not view.rows:
            return []
        depth = min(len(view.fw_items), k + view.hidden)
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        for hit in view.framework.retrieve(query, depth):
            cid = view.aliases.get(hit.item.id, hit.item.id)
            row = view.rows.get(cid)
            if row is None or cid in seen:
                continue
            seen.add(cid)
            out.append(public_item(row, float(hit.score)))
            if len(out) == k:
                break
        return out

    def list_items(self, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        rows = self.store.items(offset=offset, limit=limit)
        return {"results": [public_item(r) for r in rows], "offset": offset, "limit": limit,
                "total": self.store.count()}

    def get(self, item_id: str) -> dict[str, Any]:
        row = self.store.item(item_id)
        if row is None or row["state"] != "live" or row["alias_of"] is not None:
            raise not_found(f"memory {item_id!r}")
        return public_item(row)

    def history(self, item_id: str) -> dict[str, Any]:
        row = self.store.item(item_id)
        if row is None or row["alias_of"] is not None:
            raise not_found(f"memory {item_id!r}")
        return {"id": item_id, "state": row["state"], "history": [
            {k: h[k] for k in ("event", "text", "session_id", "at", "detail")} for h in self.store.history(item_id)]}

    def session_status(self, session_id: str) -> dict[str, Any]:
        row = self.store.session(session_id)
        if row is None:
            raise not_found(f"session {session_id!r}")
        result = row["result"] or {}
        return {"session_id": session_id, "status": row["status"], "attempts": row["attempts"],
                "error": row["error"], "ops": result.get("ops", []), "written": result.get("written", [])}

    # -- writes ----------------------------------------------------------------------
    def add_session(self, body: SessionIn) -> dict[str, Any]:
        """Store the session durably, apply every pending session in order, and return this
        session's status (done, or pending/failed with the error)."""
        payload = body.model_dump(mode="json")
        digest = _digest(payload)
        with self._write_lock:
            with self.store.write() as tx:
                known = tx.session(body.session_id)
                if known is None:
                    tx.add_session(body.session_id, digest, payload)
                elif known["digest"] != digest:
                    raise ServiceError(409, f"session {body.session_id!r} was already added with other content",
                                       "conflict_error")
                elif known["status"] == "failed":  # posted again: queue it for another try
                    tx.finish_session(body.session_id, "pending", None, known["error"], 0)
            duplicate = known is not None and known["status"] == "done"
            if not duplicate:
                self._drain()
        status = self.session_status(body.session_id)
        status["duplicate"] = duplicate
        return status

    def retry_pending(self) -> int:
        """Apply pending sessions (after a restart, or a memory-model failure); how many are left."""
        with self._write_lock:
            self._drain()
        return len(self.store.sessions("pending"))

    def _drain(self) -> None:
        for row in self.store.sessions("pending"):
            if not self._apply(row["session_id"]) and row["attempts"] + 1 < self.max_attempts:
                return  # keep arrival order: later sessions wait for this one

    def _apply(self, session_id: str) -> bool:
        published = None
        with self.store.write() as tx:
            row = tx.session(session_id)
            if row is None or row["status"] != "pending":
                return True  # another process applied it
            version, _, snapshot = tx.state()
            view = self.refresh()
            if view.version != version:  # moved since our read: rebuild from the transaction's state
                view = self._build_view(version, snapshot)
            work = self._make(self.framework_name)
            if view.snapshot:
                work.restore(codec.loads(view.snapshot))
            session, persona = to_session(SessionIn.model_validate(row["payload"]))
            before = _failures(work)
            error = None
            try:
                ops = work.ingest(session, persona)
                if _failures(work) > before:
                    error = f"memory model failed on {_failures(work) - before} call(s)"
            except Exception as err:  # noqa: BLE001 - any framework failure keeps the session pending
                error = f"{type(err).__name__}: {err}"
            if error is not None:
                attempts = row["attempts"] + 1
                status = "failed" if attempts >= self.max_attempts else "pending"
                tx.finish_session(session_id, status, None, error, attempts)
                return False
            written = self._record_changes(tx, view, work, session_id)
            new_snapshot = codec.dumps(work.snapshot())
            tx.set_state(version + 1, self.framework_name, new_snapshot)
            result = {"ops": [op.model_dump(mode="json", include={"op", "target_id", "reason"})
                              | {"item_id": op.item.id if op.item else None} for op in ops],
                      "written": written}
            tx.finish_session(session_id, "done", result, None, row["attempts"] + 1)
            published = (version + 1, work, new_snapshot)
        if published is not None:
            with self._view_lock:
                self._view = self._view_of(*published)
        return True

    def _record_changes(self, tx: Tx, view: _View, work: MemoryFramework, session_id: str) -> list[dict[str, Any]]:
        """Items the framework added, changed or removed, written to the item and history
        tables (duplicates folded); returns [{id, event}] of what the client sees."""
        after = {it.id: it for it in work.memory_items()}
        before = view.fw_items
        by_text = {normalize_text(r["text"]): cid for cid, r in view.rows.items()}
        rows = dict(view.rows)
        written: list[dict[str, Any]] = []
        for item_id in before.keys() - after.keys():
            row = tx.item(item_id)
            if row is None:
                continue
            if row["alias_of"] is None and row["state"] == "live":
                tx.set_item_state(item_id, "removed")
                tx.log(item_id, "REMOVE", row["text"], session_id)
                rows.pop(item_id, None)
                written.append({"id": item_id, "event": "REMOVE"})
            elif row["alias_of"] is not None:
                tx.set_item_state(item_id, "removed")
        for item in after.values():
            old = before.get(item.id)
            if old is None:
                written.append(self._add_item(tx, item, session_id, rows, by_text))
            elif old != item:
                row = tx.item(item.id)
                if row is not None and row["alias_of"] is None and row["state"] == "live":
                    turn_ids = ordered_union(row["turn_ids"], item.turn_ids)
                    tx.put_item({**row, **_item_fields(item), "turn_ids": turn_ids})
                    tx.log(item.id, "UPDATE", item.text, session_id)
                    written.append({"id": item.id, "event": "UPDATE"})
        return written

    def _add_item(self, tx: Tx, item: MemoryItem, session_id: str, rows: dict[str, dict],
                  by_text: dict[str, str]) -> dict[str, Any]:
        norm = normalize_text(item.text)
        same = by_text.get(norm)
        if same is not None and same in rows:
            canonical = tx.item(same)
            sessions = ordered_union(canonical["metadata"].get("sessions", []),
                                     item.metadata.get("sessions", [item.session_id] if item.session_id else []))
            widened = {**canonical, "turn_ids": ordered_union(canonical["turn_ids"], item.turn_ids),
                       "metadata": {**canonical["metadata"], "sessions": sessions}}
            tx.put_item(widened)
            tx.put_item({**_item_fields(item), "position": None, "alias_of": same, "state": "live"})
            tx.log(same, "DEDUP", item.text, session_id, {"folded": item.id})
            return {"id": same, "event": "DEDUP"}
        existing = tx.item(item.id)  # an id the framework had dropped and writes again
        row = {**_item_fields(item), "position": existing["position"] if existing else None, "alias_of": None,
               "state": "live"}
        if existing and existing["state"] == "deleted":
            row["state"] = "deleted"  # the tenant deleted it: the framework writing it again does not undo that
        else:
            meta = dict(row["metadata"])
            meta.setdefault("sessions", [item.session_id] if item.session_id else [])
            row["metadata"] = meta
        tx.put_item(row)
        if row["state"] == "live":
            rows[item.id] = row
            by_text[norm] = item.id
        tx.log(item.id, "ADD", item.text, session_id)
        return {"id": item.id, "event": "ADD"}

    def delete(self, item_id: str) -> dict[str, Any]:
        with self._write_lock:
            with self.store.write() as tx:
                row = tx.item(item_id)
                if row is None or row["state"] != "live" or row["alias_of"] is not None:
                    raise not_found(f"memory {item_id!r}")
                tx.set_item_state(item_id, "deleted")
                for alias in tx.conn.execute("SELECT id FROM items WHERE alias_of = ?", (item_id,)).fetchall():
                    tx.set_item_state(alias[0], "deleted")
                tx.log(item_id, "DELETE", row["text"], None)
                tx.bump()
        self.refresh()
        return {"id": item_id, "deleted": True}

    # -- whole memory ----------------------------------------------------------------
    def export(self) -> dict[str, Any]:
        with self._write_lock:  # a consistent cut: no write between the reads below
            version, framework, snapshot = self.store.state()
            return {"format": EXPORT_FORMAT, "framework": framework, "version": version,
                    "snapshot": json.loads(snapshot) if snapshot else None,
                    "items": self.store.all_items(), "sessions": self.store.sessions(),
                    "history": self.store.all_history()}

    def import_(self, data: ImportIn) -> dict[str, Any]:
        """Replace this tenant's whole memory with an export (of the same framework)."""
        if data.format != EXPORT_FORMAT:
            raise ServiceError(422, f"field 'format': expected {EXPORT_FORMAT!r}, got {data.format!r}")
        if data.framework != self.framework_name:
            raise ServiceError(422, f"field 'framework': this tenant's memory is {self.framework_name!r}, "
                                    f"the export is {data.framework!r}")
        snapshot = json.dumps(data.snapshot) if data.snapshot is not None else None
        try:
            probe = self._make(self.framework_name)
            if snapshot:
                probe.restore(codec.loads(snapshot))
            items = [_import_item(i, row) for i, row in enumerate(data.items)]
            sessions = [_import_session(i, row) for i, row in enumerate(data.sessions)]
            history = [_import_history(i, row) for i, row in enumerate(data.history)]
        except ServiceError:
            raise
        except Exception as err:  # noqa: BLE001 - a bad export is the client's error
            raise ServiceError(422, f"field 'snapshot': cannot restore: {type(err).__name__}: {err}") from None
        with self._write_lock:
            with self.store.write() as tx:
                version, _, _ = tx.state()
                tx.replace_all(items, sessions, history)
                tx.set_state(version + 1, self.framework_name, snapshot)
        self.refresh()
        return {"imported": {"items": len(items), "sessions": len(sessions), "history": len(history)}}


def _item_fields(item: MemoryItem) -> dict[str, Any]:
    return {"id": item.id, "text": item.text, "kind": item.kind, "session_id": item.session_id,
            "turn_ids": list(item.turn_ids), "timestamp": item.timestamp, "metadata": dict(item.metadata)}


def _need(where: str, row: dict[str, Any], fields: dict[str, tuple[type, ...]]) -> dict[str, Any]:
    for name, types in fields.items():
        if name not in row:
            raise ServiceError(422, f"field '{where}.{name}': missing")
        if not isinstance(row[name], types):
            raise ServiceError(422, f"field '{where}.{name}': expected {'/'.join(t.__name__ for t in types)}")
    return row


_STR, _OPT = (str,), (str, type(None))


def _import_item(i: int, row: dict[str, Any]) -> dict[str, Any]:
    _need(f"items.{i}", row, {"id": _STR, "position": (int,), "text": _STR, "kind": _STR, "session_id": _OPT,
                              "turn_ids": (list,), "timestamp": _OPT, "metadata": (dict,), "alias_of": _OPT,
                              "state": _STR, "created": (int, float), "updated": (int, float)})
    if row["state"] not in ("live", "deleted", "removed"):
        raise ServiceError(422, f"field 'items.{i}.state': one of live, deleted, removed")
    return row


def _import_session(i: int, row: dict[str, Any]) -> dict[str, Any]:
    _need(f"sessions.{i}", row, {"session_id": _STR, "seq": (int,), "digest": _STR, "payload": (dict,),
                                 "status": _STR, "attempts": (int,), "error": _OPT, "result": (dict, type(None)),
                                 "created": (int, float), "updated": (int, float)})
    if row["status"] not in ("pending", "done", "failed"):
        raise ServiceError(422, f"field 'sessions.{i}.status': one of pending, done, failed")
    return row


def _import_history(i: int, row: dict[str, Any]) -> dict[str, Any]:
    return _need(f"history.{i}", row, {"item_id": _STR, "event": _STR, "text": _OPT, "session_id": _OPT,
                                       "at": (int, float), "detail": (dict, type(None))})
