"""The memory service's domain core without Ray: tenants and keys, durable per-tenant
memory in SQLite, idempotent and deduplicated writes, pending sessions on memory-model
failures, export/import, and clear errors for bad bodies."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from mnemoray.config import MemoryConfig
from mnemoray.memory.registry import build_memory
from mnemoray.service import codec
from mnemoray.service.ingest import TenantMemory
from mnemoray.service.schemas import ImportIn, SearchIn, ServiceError, SessionIn, TenantIn, parse_body
from mnemoray.service.tenants import TenantRegistry, hash_key, load_admin_key

ADMIN = "admin-key-0123456789abcdef"


def _session(sid: str, lines: list[str], date: str | None = "1 May 2024") -> SessionIn:
    turns = [{"speaker": "Ann" if i % 2 == 0 else "Bot", "text": t} for i, t in enumerate(lines)]
    return SessionIn.model_validate({"session_id": sid, "date": date, "turns": turns})


DOG = ["I adopted a rescue dog named Max.", "How is Max doing?", "He loves long walks in the park.", "Nice!"]
JOB = ["I start a new job in Berlin next month.", "Congratulations!"]


class FlakyEmbedder:
    """The real embedder, made to fail while `down` is set (as a lost embedder replica would)."""

    def __init__(self, inner):
        self.inner = inner
        self.down = False

    @property
    def dim(self) -> int:
        return self.inner.dim

    def encode(self, texts):
        if self.down:
            raise ConnectionError("embedder unavailable")
        return self.inner.encode(texts)


@pytest.fixture
def flaky(embedder):
    return FlakyEmbedder(embedder)


def _memory(folder, embedder, framework="rag-hybrid", **kw) -> TenantMemory:
    return TenantMemory(folder, framework, lambda name: build_memory(MemoryConfig(name=name), embedder=embedder), **kw)


def test_keys_are_shown_once_stored_hashed_and_bound_to_one_tenant(tmp_path):
    reg = TenantRegistry(tmp_path, ADMIN)
    key_a = reg.create("alice", "rag-hybrid")
    key_b = reg.create("bob", "rag-bm25")
    assert key_a != key_b and key_a.startswith("mr-")
    assert reg.authenticate(key_a).name == "alice" and reg.authenticate(key_b).framework == "rag-bm25"
    assert reg.authenticate("mr-wrong") is None and reg.authenticate(None) is None
    assert reg.authenticate(ADMIN) is None and reg.is_admin(ADMIN) and not reg.is_admin(key_a)
    raw = sqlite3.connect(tmp_path / "tenants.sqlite").execute("SELECT key_hash FROM tenants").fetchall()
    assert {r[0] for r in raw} == {hash_key(key_a), hash_key(key_b)}
    assert key_a not in (tmp_path / "tenants.sqlite").read_bytes().decode("latin-1")
    with pytest.raises(ServiceError) as err:
        reg.create("alice", "rag-hybrid")
    assert err.value.status == 409
    (reg.tenant_dir("alice")).mkdir(parents=True)
    reg.delete("alice")
    assert reg.authenticate(key_a) is None and not reg.tenant_dir("alice").exists()
    with pytest.raises(ServiceError) as err:
        reg.delete("alice")
    assert err.value.status == 404


def test_admin_key_comes_from_the_file_or_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MNEMORAY_ADMIN_KEY", ADMIN)
    assert load_admin_key(None) == ADMIN
    (tmp_path / "k").write_text("  file-key-0123456789abcdef\n")
    assert load_admin_key(tmp_path / "k") == "file-key-0123456789abcdef"
    monkeypatch.setenv("MNEMORAY_ADMIN_KEY", "short")
    with pytest.raises(ValueError, match="MNEMORAY_ADMIN_KEY"):
        load_admin_key(None)
    with pytest.raises(ValueError, match="nope"):
        load_admin_key(tmp_path / "nope")


def test_bad_bodies_name_the_field_and_identity_fields_are_refused():
    with pytest.raises(ServiceError) as err:
        parse_body(SessionIn, {"session_id": "s1", "turns": [{"speaker": "a"}]})
    assert err.value.status == 422 and "turns.0.text" in err.value.message
    with pytest.raises(ServiceError) as err:
        parse_body(SearchIn, {"query": "x", "k": 0})
    assert "field 'k'" in err.value.message
    with pytest.raises(ServiceError) as err:
        parse_body(SearchIn, {"query": "x", "user_id": "alice"})
    assert "user_id" in err.value.message and "API key" in err.value.message
    with pytest.raises(ServiceError) as err:
        parse_body(TenantIn, {"tenant": "Bad Name"})
    assert "field 'tenant'" in err.value.message
    with pytest.raises(ServiceError) as err:
        parse_body(TenantIn, {"tenant": "ok", "framework": "nosuch"})
    assert "framework" in err.value.message and "rag-hybrid" in err.value.message
    with pytest.raises(ServiceError, match="JSON object"):
        parse_body(SearchIn, ["query"])


def test_snapshot_codec_round_trips_arrays_without_pickle():
    import numpy as np

    state = {"v": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.int64(3), "s": [1, "a"]}
    back = codec.loads(codec.dumps(state))
    assert back["v"].dtype == np.float32 and back["v"].tolist() == state["v"].tolist()
    assert back["n"] == 3 and back["s"] == [1, "a"]
    with pytest.raises(ValueError, match="dtype"):
        codec.loads('{"__ndarray__": "", "dtype": "|O", "shape": [0]}')


def test_sessions_become_searchable_items_with_provenance_and_survive_reopening(tmp_path, embedder):
    mem = _memory(tmp_path, embedder)
    out = mem.add_session(_session("s1", DOG))
    assert out["status"] == "done" and not out["duplicate"]
    assert [w["event"] for w in out["written"]] == ["ADD", "ADD"]
    mem.add_session(_session("s2", JOB))
    hits = mem.search("what is the name of my dog?", 2)
    assert hits[0]["session_id"] == "s1" and "Max" in hits[0]["text"] and hits[0]["turn_ids"] == ["s1#t0", "s1#t1"]
    listing = mem.list_items(offset=0, limit=10)
    assert listing["total"] == 3 and [r["session_id"] for r in listing["results"]] == ["s1", "s1", "s2"]
    assert mem.list_items(offset=2, limit=10)["results"][0]["session_id"] == "s2"
    mem.close()
    again = _memory(tmp_path, embedder)  # a restart: state comes back from the database
    assert again.search("what is the name of my dog?", 2) == hits
    assert again.get(hits[0]["id"]) == {k: v for k, v in hits[0].items() if k != "score"}
    with pytest.raises(ValueError, match="rag-hybrid"):
        _memory(tmp_path, embedder, framework="rag-bm25")  # the folder holds another framework's memory


def test_same_session_twice_is_applied_once_and_other_content_under_its_id_is_refused(tmp_path, embedder):
    mem = _memory(tmp_path, embedder)
    first = mem.add_session(_session("s1", DOG))
    second = mem.add_session(_session("s1", DOG))
    assert second["duplicate"] and second["written"] == first["written"]
    with pytest.raises(ServiceError) as err:
        mem.add_session(_session("s1", JOB))
    assert err.value.status == 409
    assert mem.list_items()["total"] == 2


def test_concurrent_adds_of_the_same_facts_never_duplicate(tmp_path, embedder):
    mem = _memory(tmp_path, embedder)
    errors: list[BaseException] = []

    def add(i: int) -> None:
        try:
            mem.add_session(_session(f"copy-{i}", DOG))
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    items = mem.list_items()["results"]
    assert len(items) == 2 and len({i["text"] for i in items}) == 2
    assert sorted(items[0]["sessions"]) == sorted(f"copy-{i}" for i in range(8))  # provenance widened
    hits = mem.search("dog named Max", 5)
    assert len(hits) == 2 and len({h["id"] for h in hits}) == 2
    history = mem.history(items[0]["id"])["history"]
    assert [h["event"] for h in history].count("DEDUP") == 7


def test_a_failed_write_leaves_the_session_pending_and_nothing_half_written(tmp_path, flaky):
    mem = _memory(tmp_path, flaky, max_attempts=3)
    mem.add_session(_session("s1", DOG))
    flaky.down = True
    out = mem.add_session(_session("s2", JOB))
    assert out["status"] == "pending" and out["attempts"] == 1 and "embedder unavailable" in out["error"]
    queued = mem.add_session(_session("s3", ["I like tea."]))  # waits behind s2, in order
    assert queued["status"] == "pending" and queued["attempts"] == 0
    assert mem.list_items()["total"] == 2 and mem.store.version() == 1
    flaky.down = False
    assert mem.retry_pending() == 0
    assert mem.session_status("s2")["status"] == "done" and mem.session_status("s3")["status"] == "done"
    assert [r["session_id"] for r in mem.list_items()["results"]] == ["s1", "s1", "s2", "s3"]


def test_a_session_failing_every_attempt_is_marked_failed_and_can_be_posted_again(tmp_path, flaky):
    mem = _memory(tmp_path, flaky, max_attempts=2)
    flaky.down = True
    mem.add_session(_session("s1", DOG))
    assert mem.retry_pending() == 0
    assert mem.session_status("s1")["status"] == "failed" and mem.session_status("s1")["attempts"] == 2
    flaky.down = False
    assert mem.add_session(_session("s1", DOG))["status"] == "done"


def test_memory_model_failures_keep_the_session_pending_until_a_retry_succeeds(tmp_path, embedder, fault_server):
    from mnemoray.llm.fault_server import FaultConfig
    from mnemoray.llm.openai_engine import OpenAIEngine

    broken = fault_server(FaultConfig(rate_500=1.0))
    healthy = fault_server(FaultConfig())
    url = {"now": broken.url}

    def make(name: str):
        engine = OpenAIEngine("fault-model", base_url=url["now"], max_retries=0, timeout_s=30)
        return build_memory(MemoryConfig(name=name), embedder=embedder, engine=engine)

    mem = TenantMemory(tmp_path, "dualmem", make)
    out = mem.add_session(_session("s1", DOG))
    assert out["status"] == "pending" and "memory model failed" in out["error"]
    assert mem.list_items()["total"] == 0 and mem.store.version() == 0
    url["now"] = healthy.url
    assert mem.retry_pending() == 0
    done = mem.session_status("s1")
    assert done["status"] == "done" and done["ops"] and mem.list_items()["total"] > 0


def test_delete_hides_an_item_everywhere_and_keeps_its_history(tmp_path, embedder):
    mem = _memory(tmp_path, embedder)
    mem.add_session(_session("s1", DOG))
    target = mem.search("dog named Max", 1)[0]["id"]
    mem.delete(target)
    assert target not in {h["id"] for h in mem.search("dog named Max", 5)}
    with pytest.raises(ServiceError) as err:
        mem.get(target)
    assert err.value.status == 404
    with pytest.raises(ServiceError):
        mem.delete(target)
    assert [h["event"] for h in mem.history(target)["history"]] == ["ADD", "DELETE"]
    with pytest.raises(ServiceError):
        mem.history("no-such-id")


def test_export_then_import_reproduces_the_memory_exactly(tmp_path, embedder):
    src = _memory(tmp_path / "a", embedder)
    src.add_session(_session("s1", DOG))
    src.add_session(_session("s2", JOB))
    src.delete(src.search("Berlin job", 1)[0]["id"])
    exported = src.export()
    dst = _memory(tmp_path / "b", embedder)
    assert dst.import_(ImportIn.model_validate(exported))["imported"]["sessions"] == 2
    for query in ("my dog", "Berlin", "walks in the park"):
        assert dst.search(query, 3) == src.search(query, 3)
    assert dst.list_items() == src.list_items()
    assert dst.add_session(_session("s1", DOG))["duplicate"]  # sessions came along
    bad = dict(exported, framework="rag-bm25")
    with pytest.raises(ServiceError, match="field 'framework'"):
        dst.import_(ImportIn.model_validate(bad))
    broken = dict(exported, items=[{"id": "x"}])
    with pytest.raises(ServiceError, match="items.0.position"):
        dst.import_(ImportIn.model_validate(broken))
    assert dst.list_items() == src.list_items()  # a refused import changed nothing
