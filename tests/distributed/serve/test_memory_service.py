"""The memory service on a real local Ray Serve (127.0.0.1): tenancy bound to keys,
bad input, deduplicated concurrent writes, export/import, the clients, and the OpenAI
client's chat call answered with the tenant's memories (memory model: the fault
endpoint as an OpenAI-compatible URL)."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from mnemoray.client import AsyncMemoryClient, MemoryClient, MemoryServiceError
from mnemoray.ports import free_port

pytestmark = pytest.mark.integration

ADMIN = "admin-key-for-tests-0123456789"
DOG = [{"speaker": "user", "text": "I adopted a rescue dog named Max."},
       {"speaker": "assistant", "text": "How is Max settling in?"},
       {"speaker": "user", "text": "He loves long walks along the river."},
       {"speaker": "assistant", "text": "That sounds lovely."}]
JOB = [{"speaker": "user", "text": "My sister Lena works as a nurse in Lisbon."},
       {"speaker": "assistant", "text": "Good to know."}]


def call(method: str, url: str, key: str | None = None, body=None, raw: bytes | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        text = err.read()
        try:
            return err.code, json.loads(text)
        except ValueError:
            return err.code, {"raw": text.decode("utf-8", "replace")}


@pytest.fixture(scope="module")
def service(ray_local, tmp_path_factory):
    from ray import serve

    from mnemoray.config.service import MemoryServiceConfig
    from mnemoray.distributed.serve.memory_app import run_memory_app
    from mnemoray.llm.fault_server import FaultConfig, FaultServer

    folder = tmp_path_factory.mktemp("memory-service")
    (folder / "admin.key").write_text(ADMIN)
    fault = FaultServer(FaultConfig(models=["fault-model"]))
    fault.start()
    (folder / "llm.yaml").write_text(f"engine: openai\nmodel: fault-model\nbase_url: {fault.url}\nmax_retries: 0\n")
    cfg = MemoryServiceConfig.model_validate({
        "data_dir": str(folder / "data"), "admin_key_file": str(folder / "admin.key"), "port": free_port(),
        "llm": str(folder / "llm.yaml"), "max_body_bytes": 65536, "retry_interval_s": 0.5,
        "store": {"num_cpus": 0.25},
        "model": {"deployment": {"num_cpus": 0.25}},
    })
    url, started_serve = run_memory_app(cfg)
    assert started_serve
    yield url
    serve.shutdown()
    fault.stop()


def test_a_second_app_joins_the_running_serve_under_its_name_and_leaves_it_alone(service, tmp_path):
    """As the pipeline's serve stage on a cluster that already serves apps: the running instance's
    port and a `/<name>` prefix; stopping it deletes that app only."""
    from mnemoray.config.service import MemoryServiceConfig
    from mnemoray.distributed.serve.memory_app import run_memory_app, stop_memory_app

    (tmp_path / "admin.key").write_text(ADMIN)
    cfg = MemoryServiceConfig.model_validate({"data_dir": str(tmp_path / "data"), "port": free_port(),
                                              "admin_key_file": str(tmp_path / "admin.key")})
    url, started_serve = run_memory_app(cfg, name="second")
    assert not started_serve and url == f"{service}/second"
    key = new_tenant(url, "second-tenant")
    assert MemoryClient(url, key).add(DOG, session_id="s1")["status"] == "done"
    assert MemoryClient(url, key).search("dog", 1)
    stop_memory_app("second", started_serve)
    assert call("GET", f"{url}/healthz")[0] == 404
    assert call("GET", f"{service}/healthz")[0] == 200  # the first app kept serving


def new_tenant(url: str, name: str, framework: str | None = None) -> str:
    body = {"tenant": name} | ({"framework": framework} if framework else {})
    status, out = call("POST", f"{url}/v1/admin/tenants", ADMIN, body)
    assert status == 201, out
    return out["api_key"]


def test_health_and_admin_routes_need_the_admin_key(service):
    assert call("GET", f"{service}/healthz") == (200, {"status": "ok"})
    assert call("POST", f"{service}/v1/admin/tenants", None, {"tenant": "x"})[0] == 401
    assert call("POST", f"{service}/v1/admin/tenants", "wrong-key", {"tenant": "x"})[0] == 401
    key = new_tenant(service, "adm")
    assert call("POST", f"{service}/v1/admin/tenants", key, {"tenant": "y"})[0] == 403  # a tenant key is no admin
    assert call("POST", f"{service}/v1/admin/tenants", ADMIN, {"tenant": "adm"})[0] == 409
    status, out = call("POST", f"{service}/v1/admin/tenants", ADMIN, {"tenant": "Bad Name!"})
    assert status == 422 and "field 'tenant'" in out["error"]["message"]
    assert call("DELETE", f"{service}/v1/admin/tenants/adm", ADMIN)[0] == 200
    assert call("POST", f"{service}/v1/memories/search", key, {"query": "x"})[0] == 401  # its key died with it
    assert call("DELETE", f"{service}/v1/admin/tenants/adm", ADMIN)[0] == 404


def test_tenants_are_isolated_by_key_and_a_body_cannot_name_another(service):
    key_a, key_b = new_tenant(service, "alice"), new_tenant(service, "bob")
    status, added = call("POST", f"{service}/v1/sessions", key_a, {"session_id": "a1", "date": "1 May 2024",
                                                                  "turns": DOG})
    assert status == 200 and added["status"] == "done" and len(added["written"]) == 2
    a = MemoryClient(service, key_a)
    hits = a.search("what is my dog called?", k=2)
    assert "Max" in hits[0]["text"] and hits[0]["session_id"] == "a1" and hits[0]["turn_ids"] == ["a1#t0", "a1#t1"]
    mine = hits[0]["id"]
    b = MemoryClient(service, key_b)
    assert b.search("what is my dog called?", k=2) == []
    assert b.get_all() == [] and b.export()["items"] == []
    for method, path in (("GET", ""), ("GET", "/history"), ("DELETE", "")):
        with pytest.raises(MemoryServiceError) as foreign:
            b._call(method, f"/v1/memories/{mine.replace('#', '%23')}{path}")
        with pytest.raises(MemoryServiceError) as missing:
            b._call(method, f"/v1/memories/no-such-id{path}")
        assert foreign.value.status == missing.value.status == 404
        assert foreign.value.message.replace(mine, "X") == missing.value.message.replace("no-such-id", "X")
    spoof = {"query": "dog", "user_id": "alice"}
    status, out = call("POST", f"{service}/v1/memories/search", key_b, spoof)
    assert status == 422 and "user_id" in out["error"]["message"]
    status, _ = call("POST", f"{service}/v1/sessions", key_b, {"session_id": "b1", "turns": JOB, "user_id": "alice"})
    assert status == 422 and [h["id"] for h in a.search("sister nurse Lisbon", 5)] == [h["id"] for h in hits]
    for key in (None, "mr-not-a-key"):
        assert call("POST", f"{service}/v1/memories/search", key, {"query": "dog"})[0] == 401
        assert call("GET", f"{service}/v1/export", key)[0] == 401
    status, out = call("POST", f"{service}/v1/memories/search", ADMIN, {"query": "dog"})
    assert status == 403 and "admin key" in out["error"]["message"]
    assert a.get(mine)["text"] == hits[0]["text"]


def test_bad_input_answers_422_413_404_never_a_traceback(service):
    key = new_tenant(service, "carol")
    status, out = call("POST", f"{service}/v1/sessions", key, {"session_id": "c1", "turns": [{"speaker": "u"}]})
    assert status == 422 and "turns.0.text" in out["error"]["message"]
    status, out = call("POST", f"{service}/v1/memories/search", key, raw=b"{not json")
    assert status == 422 and "JSON" in out["error"]["message"]
    status, out = call("POST", f"{service}/v1/memories/search", key, {"query": "q", "k": 1000})
    assert status == 422 and "field 'k'" in out["error"]["message"]
    status, out = call("GET", f"{service}/v1/memories?limit=abc", key)
    assert status == 422 and "field 'limit'" in out["error"]["message"]
    big = {"session_id": "c2", "turns": [{"speaker": "u", "text": "x" * 70000}]}
    status, out = call("POST", f"{service}/v1/sessions", key, big)
    assert status == 413 and "65536" in out["error"]["message"]
    status, out = call("POST", f"{service}/v1/import", key, {"format": "mnemoray-memory/1", "framework": "rag-hybrid",
                                                             "version": 0, "snapshot": {"name": "rag-hybrid"},
                                                             "items": [], "sessions": []})
    assert status == 422 and "snapshot" in out["error"]["message"] and "Traceback" not in json.dumps(out)
    status, out = call("POST", f"{service}/v1/chat/completions", key, {"model": "memory", "messages": []})
    assert status == 422 and "messages" in out["error"]["message"]
    assert call("GET", f"{service}/v1/sessions/none", key)[0] == 404


def test_concurrent_adds_of_the_same_facts_leave_no_duplicates(service):
    key = new_tenant(service, "dave")
    client = MemoryClient(service, key)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: client.add(DOG, session_id=f"d{i % 6}", date="2 May 2024"), range(12)))
    assert {r["status"] for r in results} == {"done"}
    assert sum(r["duplicate"] for r in results) == 6  # the same session id twice is applied once
    items = client.get_all()
    assert len(items) == 2 and len({i["text"] for i in items}) == 2
    assert sorted(items[0]["sessions"]) == [f"d{i}" for i in range(6)]
    hits = client.search("dog Max", 5)
    assert len(hits) == 2 and len({h["id"] for h in hits}) == 2


def test_concurrent_searches_share_forward_passes_and_each_gets_its_own_results(service):
    """Searches in flight together share forward passes (the micro-batcher in the replica that
    holds the store: queries arriving during a pass go in the next one); every caller still
    gets exactly its own query's results."""
    from ray import serve

    client = MemoryClient(service, new_tenant(service, "judy"))
    client.add(DOG, session_id="j1", date="7 May 2024")
    client.add(JOB, session_id="j2", date="8 May 2024")
    queries = [f"{topic} {i}" for i, topic in enumerate(["dog Max", "river walks", "sister nurse", "Lisbon"] * 4)]
    alone = [client.search(q, 3) for q in queries]
    ingress = serve.get_deployment_handle("MemoryIngress", "memory")
    before = ingress.batch_stats.remote().result()["shared_searches"]
    with ThreadPoolExecutor(len(queries)) as pool:
        together = list(pool.map(lambda q: client.search(q, 3), queries))
    assert ingress.batch_stats.remote().result()["shared_searches"] > before
    assert [[h["id"] for h in r] for r in together] == [[h["id"] for h in r] for r in alone]
    assert [[round(h["score"], 4) for h in r] for r in together] == [[round(h["score"], 4) for h in r] for r in alone]
    assert len({tuple(h["id"] for h in r) for r in alone}) > 1  # the queries do rank differently


def test_export_import_delete_and_history_through_the_clients(service):
    src = MemoryClient(service, new_tenant(service, "erin"))
    src.add(DOG, session_id="e1", date="3 May 2024")
    src.add(JOB, session_id="e2", date="4 May 2024")
    gone = src.search("sister nurse", 1)[0]["id"]
    assert src.delete(gone) == {"id": gone, "deleted": True}
    assert [h["event"] for h in src.history(gone)["history"]] == ["ADD", "DELETE"]
    exported = src.export()
    dst_key = new_tenant(service, "frank")
    dst = MemoryClient(service, dst_key)
    assert dst.import_(exported)["imported"]["sessions"] == 2
    assert dst.get_all() == src.get_all() and len(dst.get_all()) == 2
    assert dst.search("river walks", 3) == src.search("river walks", 3)

    async def from_async() -> tuple[list, list]:
        async with AsyncMemoryClient(service, dst_key) as client:
            return await client.search("river walks", 3), await client.get_all(limit=1)

    found, paged = asyncio.run(from_async())
    assert found == src.search("river walks", 3) and paged == src.get_all()


def test_the_openai_client_chats_with_the_tenants_memories(service):
    key = new_tenant(service, "gina")
    MemoryClient(service, key).add(DOG, session_id="g1", date="5 May 2024")
    client = openai.OpenAI(base_url=f"{service}/v1", api_key=key, max_retries=0, timeout=60)
    assert [m.id for m in client.models.list().data] == ["memory"]
    reply = client.chat.completions.create(model="memory", messages=[{"role": "user", "content": "Who is Max?"}])
    assert reply.choices[0].message.content.strip().endswith("Who is Max?")  # the fault endpoint echoes
    assert reply.model_extra["mnemoray"]["memories"][0].startswith("g1#")  # retrieved for the prompt
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{service}/v1", api_key="mr-bad", max_retries=0).chat.completions.create(
            model="memory", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="other", messages=[{"role": "user", "content": "x"}])


def test_an_llm_built_tenant_writes_through_the_batched_memory_model(service):
    key = new_tenant(service, "hank", framework="dualmem")
    out = MemoryClient(service, key).add(DOG, session_id="h1", date="6 May 2024")
    assert out["status"] == "done" and out["ops"], out
    assert MemoryClient(service, key).get_all()


def eval_in_process_and_through(service: str, args: list[str], out: Path) -> dict[str, tuple[dict, list[dict]]]:
    """Run `mnemoray <args>` in process and with `--service`: {"local"|"service": (metrics
    without the config, per-query rows)}, both runs on one Ray Data worker."""
    from typer.testing import CliRunner

    from mnemoray.cli.main import app

    runs = {}
    for name, extra in (("local", []), ("service", ["--service", service])):
        result = CliRunner().invoke(app, [*args, *extra, "--out", str(out / name), "ray.workers=1",
                                          "ray.cpus_per_worker=0.5"])
        assert result.exit_code == 0, result.output
        metrics = json.loads((out / name / "metrics.json").read_text())
        metrics.pop("config", None)
        rows = [json.loads(line) for line in (out / name / "per_query.jsonl").read_text().splitlines()]
        runs[name] = (metrics, rows)
    return runs


def test_eval_retrieval_cli_through_the_service_reports_the_in_process_figures(service, data_root, tmp_path,
                                                                                monkeypatch):
    """`mnemoray eval retrieval --service URL` (Ray Data workers, one fresh tenant per history)
    writes the same per-query rows and metrics as the in-process run (rag-hybrid)."""
    monkeypatch.setenv("MNEMORAY_ADMIN_KEY", ADMIN)
    runs = eval_in_process_and_through(service, [
        "eval", "retrieval", "--dataset", "locomo", "--data", str(data_root / "locomo" / "locomo10_sample.json"),
        "--memory", "rag-hybrid", "--k", "1,5,10", "--limit", "1"], tmp_path)
    assert runs["service"][1] == runs["local"][1] and len(runs["local"][1]) > 0
    assert runs["service"][0] == runs["local"][0]


def test_eval_qa_cli_through_the_service_answers_from_the_same_memories_as_in_process(service, data_root, tmp_path,
                                                                                       monkeypatch):
    """`mnemoray eval qa --service URL`: the answerer and judge are an endpoint whose answers are
    drawn from the whole prompt (retrieved memories included), so equal rows mean equal context;
    metrics equal too (rag-hybrid, one fresh tenant per history)."""
    from mnemoray.llm.fault_server import FaultConfig, FaultServer

    monkeypatch.setenv("MNEMORAY_ADMIN_KEY", ADMIN)
    with FaultServer(FaultConfig(vary_strings=True)) as llm_url:
        llm = tmp_path / "answerer.yaml"
        llm.write_text(f"engine: openai\nmodel: fault-model\nbase_url: {llm_url}\nmax_retries: 0\n")
        runs = eval_in_process_and_through(service, [
            "eval", "qa", "--dataset", "locomo", "--data", str(data_root / "locomo" / "locomo10_sample.json"),
            "--memory", "rag-hybrid", "--answerer", str(llm), "--judge", str(llm), "--k", "5", "--limit", "1",
            "--max-queries", "12"], tmp_path)
    (local_metrics, local), (remote_metrics, remote) = runs["local"], runs["service"]
    assert len(local) == 12 and all(r["answer_failure"] is None and r["retrieved"] for r in local)
    assert len({r["prediction"] for r in local}) > 1  # answers depend on their prompts
    assert [r["retrieved"] for r in remote] == [r["retrieved"] for r in local]
    assert remote == local and remote_metrics == local_metrics


def test_eval_rolememo_cli_through_the_service_reports_the_in_process_recall(service, rolememo_data, tmp_path,
                                                                             monkeypatch):
    """`mnemoray eval rolememo --service URL` (the judged evaluations share the flag): the same
    retrieved items, fact / insight hits and metrics as the in-process run (rag-hybrid)."""
    monkeypatch.setenv("MNEMORAY_ADMIN_KEY", ADMIN)
    runs = eval_in_process_and_through(service, ["eval", "rolememo", "--data", str(rolememo_data),
                                                 "--memory", "rag-hybrid"], tmp_path)
    (local_metrics, local), (remote_metrics, remote) = runs["local"], runs["service"]
    assert len(local) == 3 and any(r["retrieved"] for r in local)
    assert remote == local and remote_metrics == local_metrics


def test_eval_through_a_service_refuses_a_wrong_admin_key_or_no_service(service, tmp_path, monkeypatch, data_root):
    from typer.testing import CliRunner

    from mnemoray.cli.main import app

    base = ["eval", "qa", "--dataset", "locomo", "--data", str(data_root / "locomo" / "locomo10_sample.json"),
            "--limit", "1", "--out", str(tmp_path / "qa")]
    monkeypatch.setenv("MNEMORAY_ADMIN_KEY", "not-the-admin-key-0123456789")
    result = CliRunner().invoke(app, [*base, "--service", service])
    assert result.exit_code != 0 and "refused the admin key" in result.output and "MNEMORAY_ADMIN_KEY" in result.output
    monkeypatch.setenv("MNEMORAY_ADMIN_KEY", ADMIN)
    result = CliRunner().invoke(app, [*base, "--service", f"http://127.0.0.1:{free_port()}"])
    assert result.exit_code != 0 and "not reachable" in result.output
    result = CliRunner().invoke(app, [*base, "--service", "127.0.0.1:8000"])
    assert result.exit_code != 0 and "service" in result.output and "http(s) URL" in result.output
    result = CliRunner().invoke(app, [*base, "--service", service, "--memory-bank", str(tmp_path)])
    assert result.exit_code != 0 and "exclude each other" in result.output
    assert MemoryClient(service, new_tenant(service, "after-refusals")).get_all() == []


def test_an_evaluation_through_the_service_deletes_the_tenants_it_made(service):
    from mnemoray.config import MemoryConfig
    from mnemoray.memory.source import MemorySource

    source = MemorySource(MemoryConfig(name="rag-hybrid"), service={"url": service, "admin_key": ADMIN})
    memory = source.factory("h1")()
    memory.client.add(DOG, session_id="x1")
    assert memory.client.search("dog", 1)
    source.release()
    with pytest.raises(MemoryServiceError) as gone:
        memory.client.search("dog", 1)
    assert gone.value.status == 401
    source.release()  # nothing left to delete


@pytest.fixture(scope="module")
def faulty_service(service, tmp_path_factory):
    """A second app of the same Serve instance (under /faulty) whose memory model is the
    fault endpoint failing 20 % of requests, with no retries in the engine."""
    from ray import serve

    from mnemoray.config.service import MemoryServiceConfig
    from mnemoray.distributed.serve.memory_app import build_memory_app
    from mnemoray.llm.fault_server import FaultConfig, FaultServer

    folder = tmp_path_factory.mktemp("faulty-service")
    (folder / "admin.key").write_text(ADMIN)
    fault = FaultServer(FaultConfig(models=["fault-model"], fault_rate=0.2, seed=3))
    fault.start()
    (folder / "llm.yaml").write_text(f"engine: openai\nmodel: fault-model\nbase_url: {fault.url}\nmax_retries: 0\n"
                                     "structured_retries: 0\n")
    cfg = MemoryServiceConfig.model_validate({
        "data_dir": str(folder / "data"), "admin_key_file": str(folder / "admin.key"),
        "llm": str(folder / "llm.yaml"), "retry_interval_s": 0.2, "max_attempts": 50,
        "memory": {"name": "dualmem"},
        "embedder": {"deployment": {"num_cpus": 0.25}}, "store": {"num_cpus": 0.25},
        "model": {"deployment": {"num_cpus": 0.25}},
    })
    serve.run(build_memory_app(cfg), name="faulty", route_prefix="/faulty")
    yield f"{service}/faulty", fault
    serve.delete("faulty")
    fault.stop()


def test_memory_model_faults_leave_sessions_pending_then_retried_never_half_written(faulty_service):
    import time

    url, fault = faulty_service
    client = MemoryClient(url, new_tenant(url, "ivy"))
    sessions = {f"f{i}": [{"speaker": "user", "text": f"Fact {i}: I keep {i + 2} plants on the balcony."},
                          {"speaker": "assistant", "text": "Lovely."}] for i in range(8)}
    with ThreadPoolExecutor(8) as pool:
        first = dict(zip(sessions, pool.map(lambda sid: client.add(sessions[sid], session_id=sid), sessions)))
    assert {o["status"] for o in first.values()} <= {"done", "pending"}
    waiting = {sid for sid, o in first.items() if o["status"] == "pending"}
    for sid in waiting:  # failed now (the error says why) or queued behind one that did; nothing written
        o = first[sid]
        assert o["written"] == [] and (o["error"] if o["attempts"] else o["error"] is None)
    assert any(first[sid]["error"] for sid in waiting) or not waiting
    for sid in sessions:  # the retry loop finishes every session (bounded wait)
        for _ in range(600):
            if client.session(sid)["status"] == "done":
                break
            time.sleep(0.1)
        assert client.session(sid)["status"] == "done", client.session(sid)
    outcomes = fault.counters.snapshot()["outcomes"]
    assert sum(n for k, n in outcomes.items() if k != "ok") > 0  # faults did happen
    assert any(client.session(sid)["attempts"] > 1 for sid in sessions)  # and were retried
    texts = [it["text"] for it in client.get_all()]
    assert len(texts) == len(set(texts))


def _sessions(prefix: str, n: int):
    from mnemoray.records import Session, Turn

    return [Session(id=f"{prefix}{i}", timestamp="9 May 2024", turns=[
        Turn(id=f"d-{prefix}{i}-0", speaker="user", text=f"Fact {i}: my cousin {prefix} keeps {i + 3} goats.", index=0),
        Turn(id=f"d-{prefix}{i}-1", speaker="assistant", text="Good to know.", index=1)]) for i in range(n)]


def test_evaluation_ingest_waits_for_sessions_the_service_left_pending(faulty_service):
    """`eval ... --service` with an LLM-built framework: a session answered `pending` (a
    memory-model call failed) is polled until the service's retry applies it, not an error."""
    from mnemoray.service.remote import ServiceMemory

    url, _ = faulty_service
    memory = ServiceMemory.fresh(url, ADMIN, "dualmem", poll_interval_s=0.05)
    ops = [memory.ingest(s) for s in _sessions("w", 8)]
    statuses = [memory.client.session(f"w{i}") for i in range(8)]
    assert all(s["status"] == "done" for s in statuses) and all(ops)
    assert any(s["attempts"] > 1 for s in statuses)  # some came back pending at first, and were waited for
    assert {t for item in memory.memory_items() for t in item.turn_ids} <= {f"d-w{i}-{j}" for i in range(8)
                                                                          for j in (0, 1)}


def test_a_session_still_pending_past_the_bound_fails_naming_tenant_and_session(faulty_service):
    from mnemoray.service.remote import ServiceMemory

    url, _ = faulty_service
    memory = ServiceMemory.fresh(url, ADMIN, "dualmem", pending_timeout_s=0)
    memory.history_id = "conv-7"  # as MemorySource sets it for the history it evaluates
    with pytest.raises(RuntimeError) as err:
        for session in _sessions("t", 30):  # 20 % of model calls fail: one comes back pending soon
            memory.ingest(session)
    message = str(err.value)
    assert repr(memory.tenant) in message and "session 't" in message and "still pending after 0 s" in message
    assert message.startswith("history 'conv-7', ")
    assert "MNEMORAY_SERVICE_PENDING_TIMEOUT_S" in message and "last error: None" not in message
