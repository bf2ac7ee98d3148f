"""`synth realmem` for real: local Ray, the instant fault endpoint, a killed driver, 20 % faults."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mnemoray.config import load_config
from mnemoray.config.synth import RealMemSynthConfig
from mnemoray.synth.realmem.machine import STAGES
from mnemoray.synth.store import StageStore
from repo_paths import REPO

pytestmark = pytest.mark.integration

LOCAL = REPO / "configs" / "synth" / "realmem_local.yaml"


def endpoint_llm(folder: Path, url: str) -> Path:
    llm = folder / "llm.yaml"
    llm.write_text(f"engine: openai\nmodel: fault-model\nbase_url: {url}\nmax_in_flight: 32\n"
                   "timeout_s: 10\nmax_retries: 1\nstructured_retries: 1\n")
    return llm


def overrides(out: Path, llm: Path, tokenizer: Path, *extra: str) -> list[str]:
    return [f"out={out}", f"llm={llm}", "llm_overrides=[]", f"tokenizer={tokenizer}", *extra]


def kept_ids(out: Path) -> dict[str, list[str]]:
    return {name: sorted(StageStore(out, name).read("kept", ["id"]).column(0).to_pylist()) for name in STAGES}


@pytest.fixture(scope="module")
def endpoint(ray_local, tiny_cache, tmp_path_factory):
    """The zero-fault instant endpoint (answers depend only on the request) and one uninterrupted run."""
    from mnemoray.distributed.data.synth_realmem import run_realmem
    from mnemoray.llm.fault_server import FaultConfig, FaultServer
    from mnemoray.llm.tiny import ensure_tiny

    root = tmp_path_factory.mktemp("realmem")
    tokenizer = ensure_tiny(tiny_cache, arch="qwen2", seed=0)
    with FaultServer(FaultConfig(latency_ms=2, vary_strings=True)) as url:
        llm = endpoint_llm(root, url)
        cfg = load_config(RealMemSynthConfig, LOCAL, overrides(root / "reference", llm, tokenizer))
        stats = run_realmem(cfg)
        yield {"cfg": cfg, "stats": stats, "llm": llm, "tokenizer": tokenizer, "url": url}


def test_every_stage_produces_rows_and_the_histories_are_realmem_files(endpoint, tmp_path):
    from typer.testing import CliRunner

    from mnemoray.cli.main import app
    from mnemoray.loaders import load_dataset

    cfg, stats = endpoint["cfg"], endpoint["stats"]
    assert stats["personas"]["valid"] == 3 and stats["personas"]["with_history"] == 3
    for name in STAGES:
        assert stats["stages"][name]["kept"] > 0, f"stage {name} kept nothing: {stats['stages'][name]}"
    for name, ids in kept_ids(cfg.out).items():
        assert len(ids) == len(set(ids)), f"duplicates in {name}"
    assert stats["stages"]["outlines"]["inputs"] == 3 * 2
    assert 6 <= stats["sessions"]["turns"]["min"] and stats["sessions"]["turns"]["max"] <= 8
    assert stats["sessions"]["queries"] > 0
    # each history stops growing once it reached the target
    sessions = {}
    for s in StageStore(cfg.out, "sessions").iter_records():
        sessions.setdefault(s["persona_id"], []).append(s)
    for rows in sessions.values():
        rows.sort(key=lambda r: r["order"])
        assert sum(r["tokens"] for r in rows[:-1]) < cfg.target_tokens
    report = (cfg.out / "report.md").read_text()
    assert "| sessions |" in report and (cfg.out / "history_lengths.png").stat().st_size > 0

    samples, errors = load_dataset("realmem", cfg.out / "dataset")
    assert not errors and len(samples) == 3
    assert sum(len(s.queries) for s in samples) > 0
    for sample in samples:  # gold sessions are always earlier than the query's session
        order = [s.id for s in sample.history.sessions]
        for q in sample.queries:
            assert all(order.index(g) < q.visible_sessions for g in q.gold_ids)
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["eval", "retrieval", "--dataset", "realmem", "--data", str(cfg.out / "dataset"),
                                      "--memory", "rag-hybrid", "--k", "1,5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_queries"] == sum(len(s.queries) for s in samples)

    # `eval realmem-judge` runs on it unchanged (the instant endpoint answering and judging)
    judged = tmp_path / "judge"
    result = CliRunner().invoke(app, [
        "eval", "realmem-judge", "--config", str(REPO / "configs/eval/realmem_judge_local.yaml"),
        "--data", str(cfg.out / "dataset"), "--memory", "rag-bm25", "--answerer", str(endpoint["llm"]),
        "--judge", str(endpoint["llm"]), "--limit", "3", "--max-queries", "2", "--judge-runs", "1",
        "--out", str(judged), "ray.workers=1"])
    assert result.exit_code == 0, result.output
    m = json.loads((judged / "metrics.json").read_text())
    assert m["n_histories"] == 3 and m["n_queries"] == sum(min(2, len(s.queries)) for s in samples) > 0
    gold = {}  # query id -> memory_used of the answering assistant turn, from our own files
    for path in (cfg.out / "dataset").glob("*.json"):
        for session in json.loads(path.read_text())["dialogues"]:
            turns = session["dialogue_turns"]
            gold.update({t["query_id"]: turns[i + 1]["memory_used"] for i, t in enumerate(turns) if t["is_query"]})
    rows = [json.loads(line) for line in (judged / "per_query.jsonl").read_text().splitlines()]
    assert len(rows) == m["n_queries"]
    for r in rows:
        assert [g for g in r["gold_memory"]] and len(r["gold_memory"]) == len(gold[r["query_id"]])
    assert all(d["n_scored"] > 0 for d in m["dimensions"].values()), m["dimensions"]


def alive_persona_workers() -> int:
    """Processes of persona worker actors (Ray titles an actor process `ray::<class>`)."""
    alive = 0
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                alive += (proc / "cmdline").read_bytes().startswith(b"ray::PersonaWorker")
    return alive


def test_a_killed_driver_resumes_to_the_same_ids_without_duplicates(endpoint, ray_local, tmp_path):
    from mnemoray.distributed.data.synth_realmem import run_realmem

    out = tmp_path / "run"
    address = ray_local.get_runtime_context().gcs_address  # the driver joins this module's Ray
    args = overrides(out, endpoint["llm"], endpoint["tokenizer"], "ray.write_every=1", f"ray.address={address}")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mnemoray", "synth", "realmem", "--config", str(LOCAL), *args],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    done_dir = out / "stages" / "sessions" / "done"
    try:
        while proc.poll() is None and not (done_dir.is_dir() and len(list(done_dir.glob("part-*.parquet"))) >= 2):
            time.sleep(0.1)
        assert proc.poll() is None, "the run finished before it could be killed: " + proc.stderr.read().decode()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    while alive_persona_workers():  # the killed job's actors go with their driver
        time.sleep(0.1)
    partial = kept_ids(out)
    assert partial["sessions"] and len(partial["histories"]) < 3

    cfg = load_config(RealMemSynthConfig, LOCAL, args[:-1])
    stats = run_realmem(cfg)
    assert kept_ids(out) == kept_ids(endpoint["cfg"].out)
    assert stats["stages"]["outlines"]["inputs"] == 6  # not redone
    ours = {p.name: json.loads(p.read_text()) for p in (out / "dataset").glob("*.json")}
    reference = {p.name: json.loads(p.read_text()) for p in (endpoint["cfg"].out / "dataset").glob("*.json")}
    assert ours == reference


def test_endpoint_faults_end_in_rejects_and_the_run_completes(endpoint, tmp_path):
    from mnemoray.distributed.data.synth_realmem import run_realmem
    from mnemoray.llm.fault_server import FaultConfig, FaultServer

    with FaultServer(FaultConfig(fault_rate=0.2, vary_strings=True, seed=3, retry_after_ms=1)) as url:
        llm = endpoint_llm(tmp_path, url)
        cfg = load_config(RealMemSynthConfig, LOCAL, overrides(tmp_path / "run", llm, endpoint["tokenizer"]))
        stats = run_realmem(cfg)
    assert stats["personas"]["with_history"] == 3
    reasons = {r: n for s in stats["stages"].values() for r, n in s["rejected_by_reason"].items()}
    assert any(r.startswith("llm_") for r in reasons), reasons
    rejects = [r for name in STAGES for r in StageStore(cfg.out, name).read("rejects").to_pylist()]
    failed = [r for r in rejects if r["reason"].startswith("llm_")]
    assert failed and all(r["detail"] for r in failed)  # each says what went wrong
    assert all(r["raw"] for r in failed if r["reason"] in ("llm_parse", "llm_schema"))  # and keeps the raw text
    for name in ("outlines", "events"):  # nothing lost: every input finished, kept or rejected
        s = stats["stages"][name]
        assert s["inputs"] >= s["kept"] and s["inputs"] == len(set(StageStore(cfg.out, name).done_ids()))


def parent_of(pid: int) -> int:
    with contextlib.suppress(OSError):
        return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
    return 0


def engine_actor_pids() -> set[int]:
    """Processes of engine-fleet actors (`ray::BatchAnswerer`) of this module's Ray, which this
    process started (other Ray instances on the machine are not ours to touch)."""
    pids = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if (proc / "cmdline").read_bytes().startswith(b"ray::BatchAnswerer"):
                    pid = ancestor = int(proc.name)
                    while ancestor > 1 and ancestor != os.getpid():
                        ancestor = parent_of(ancestor)
                    if ancestor == os.getpid():
                        pids.add(pid)
    return pids


def test_a_killed_engine_worker_is_restarted_and_the_run_ends_with_the_same_ids(endpoint, ray_local, tmp_path):
    """SIGKILL the fleet's engine actor mid-run: Ray restarts it and re-runs the calls it had in hand."""
    out = tmp_path / "run"
    address = ray_local.get_runtime_context().gcs_address
    args = overrides(out, endpoint["llm"], endpoint["tokenizer"], "ray.write_every=1", f"ray.address={address}")
    before = engine_actor_pids()
    proc = subprocess.Popen([sys.executable, "-m", "mnemoray", "synth", "realmem", "--config", str(LOCAL), *args],
                            cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    done_dir = out / "stages" / "sessions" / "done"
    try:
        while proc.poll() is None and not (done_dir.is_dir() and any(done_dir.glob("part-*.parquet"))):
            time.sleep(0.1)
        victims = engine_actor_pids() - before
        assert proc.poll() is None and victims, "the run finished before its engine actor could be killed"
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        _, stderr = proc.communicate()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, stderr.decode()[-3000:]
    ids = kept_ids(out)
    assert ids == kept_ids(endpoint["cfg"].out)  # no duplicates, nothing lost
    ours = {p.name: json.loads(p.read_text()) for p in (out / "dataset").glob("*.json")}
    reference = {p.name: json.loads(p.read_text()) for p in (endpoint["cfg"].out / "dataset").glob("*.json")}
    assert ours == reference
