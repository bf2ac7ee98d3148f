"""`synth rolememo` for real: local Ray, the tiny model, a killed driver, a faulty endpoint."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mnemoray.config import load_config
from mnemoray.config.synth import RoleMemoConfig
from mnemoray.synth.stages import STAGES
from mnemoray.synth.store import StageStore
from repo_paths import REPO

pytestmark = pytest.mark.integration

LOCAL = REPO / "configs" / "synth" / "rolememo_local.yaml"
ALL_STAGES = [s.name for s in STAGES] + ["histories"]


def local_overrides(out: Path, tiny_cache: Path, cache: Path) -> list[str]:
    return [f"out={out}", f"llm={REPO / 'configs/llm/tiny_local.yaml'}",
            f'llm_overrides=["tiny_cache_dir={tiny_cache}", "cache_dir={cache}"]']


def kept_ids(out: Path) -> dict[str, list[str]]:
    return {name: sorted(StageStore(out, name).read("kept", ["id"]).column(0).to_pylist()) for name in ALL_STAGES}


def truth_ids(out: Path) -> list[str]:
    return sorted(pq.read_table(out / "dataset" / "ground_truth.parquet").column("id").to_pylist())


@pytest.fixture(scope="module")
def tiny_run(ray_local, tiny_cache, tmp_path_factory):
    from mnemoray.distributed.data.synth_rolememo import run_rolememo

    root = tmp_path_factory.mktemp("synth")
    cfg = load_config(RoleMemoConfig, LOCAL, local_overrides(root / "run", tiny_cache, root / "cache"))
    return cfg, run_rolememo(cfg)


def test_every_stage_produces_rows_and_the_counts_add_up(tiny_run):
    cfg, stats = tiny_run
    assert stats["personas"]["valid"] == 8
    for name in ALL_STAGES:
        s = stats["stages"][name]
        assert s["kept"] > 0, f"stage {name} kept nothing: {s}"
        if "pass_rate" in s:
            assert s["inputs"] == s["kept"] + s["rejected"], name
    assert stats["stages"]["insights"]["kept"] == 8 * 20
    assert stats["stages"]["insight_check"]["inputs"] == 8 * 20
    for name, ids in kept_ids(cfg.out).items():
        assert len(ids) == len(set(ids)), f"duplicates in {name}"
    h = stats["histories"]
    assert h["count"] >= 1 and h["max"] <= cfg.target_tokens and h["min"] >= 0.9 * cfg.target_tokens
    assert (cfg.out / "report.md").read_text().count("| insight_check |") == 1
    assert (cfg.out / "history_lengths.png").stat().st_size > 0


def test_the_dataset_has_ground_truth_and_the_eval_harness_runs_rag_hybrid_on_it(tiny_run, tmp_path):
    from typer.testing import CliRunner

    from mnemoray.cli.main import app
    from mnemoray.loaders import load_dataset

    cfg, stats = tiny_run
    samples, errors = load_dataset("rolememo", cfg.out)
    assert not errors and len(samples) == stats["histories"]["count"]
    truth = {q["id"]: q for q in map(json.loads, (cfg.out / "dataset" / "ground_truth.jsonl").read_text().splitlines())}
    for sample in samples:
        turns = {t.id: t for s in sample.history.sessions for t in s.turns}
        for q in sample.queries:
            row = truth[q.id]
            assert {"persona", "core_insight", "core_fragments"} <= set(row) and len(row["core_fragments"]) == 2
            query_session = sample.history.sessions[q.visible_sessions]
            assert query_session.turns[0].is_query and query_session.turns[0].text == q.text
            for gold, fragment in zip(q.gold_ids, row["core_fragments"]):
                assert turns[gold].speaker == "user" and fragment in turns[gold].text
        stamps = [s.timestamp for s in sample.history.sessions]
        assert stamps == sorted(stamps)
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["eval", "retrieval", "--dataset", "rolememo", "--data", str(cfg.out),
                                      "--memory", "rag-hybrid", "--k", "1,5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_queries"] == stats["histories"]["queries"]


def test_a_killed_driver_resumes_to_the_same_ids_without_duplicates(tiny_run, tiny_cache, tmp_path):
    from mnemoray.distributed.data.synth_rolememo import run_rolememo

    ref_cfg, _ = tiny_run
    out = tmp_path / "run"
    overrides = local_overrides(out, tiny_cache, tmp_path / "cache")  # its own LLM cache: nothing shared
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mnemoray", "synth", "rolememo", "--config", str(LOCAL), *overrides],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    done_dir = out / "stages" / "insight_check" / "done"
    try:
        while proc.poll() is None and not (done_dir.is_dir() and any(done_dir.glob("part-*.parquet"))):
            time.sleep(0.2)
        assert proc.poll() is None, "the run finished before it could be killed: " + proc.stderr.read().decode()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # Ray processes the driver started
    assert not (out / "dataset").exists()
    partial = kept_ids(out)
    assert 0 < len(partial["insight_check"]) and not partial["histories"]

    cfg = load_config(RoleMemoConfig, LOCAL, overrides)
    stats = run_rolememo(cfg)
    resumed, reference = kept_ids(out), kept_ids(ref_cfg.out)
    assert resumed == reference
    assert stats["stages"]["insights"]["inputs"] == 8  # not redone
    assert truth_ids(out) == truth_ids(ref_cfg.out)


def test_endpoint_faults_end_in_rejects_and_the_run_completes(ray_local, tiny_cache, tmp_path):
    from mnemoray.distributed.data.synth_rolememo import run_rolememo
    from mnemoray.llm.fault_server import FaultConfig, FaultServer
    from mnemoray.llm.tiny import ensure_tiny

    with FaultServer(FaultConfig(fault_rate=0.2, vary_strings=True, seed=3)) as url:
        llm = tmp_path / "llm.yaml"
        llm.write_text(f"engine: openai\nmodel: fault-model\nbase_url: {url}\nmax_in_flight: 16\n"
                       "timeout_s: 10\nmax_retries: 1\nstructured_retries: 1\n")
        cfg = load_config(RoleMemoConfig, LOCAL, [f"out={tmp_path / 'run'}", f"llm={llm}", "llm_overrides=[]",
                                                  f"tokenizer={ensure_tiny(tiny_cache, arch='qwen2', seed=0)}"])
        stats = run_rolememo(cfg)
    reasons = {}
    for name in ALL_STAGES:
        s = stats["stages"][name]
        for reason, n in s["rejected_by_reason"].items():
            reasons[reason] = reasons.get(reason, 0) + n
        if "pass_rate" in s:
            assert s["inputs"] == s["kept"] + s["rejected"], name
    assert any(r.startswith("llm_") for r in reasons), reasons
    rejects = pq.read_table(cfg.out / "dataset" / "rejects.parquet").to_pylist()
    assert any(r["reason"] == "llm_parse" and r["raw"] for r in rejects) or any(
        r["reason"] == "llm_http" for r in rejects)
    # nothing lost: every input of every stage is finished (kept or rejected)
    for stage in STAGES:
        source = StageStore(cfg.out, stage.source).read("kept", ["id"]).num_rows
        assert stats["stages"][stage.name]["inputs"] == source, stage.name
    assert stats["histories"]["count"] == 8


# -- the streaming pipeline's engine fleet, and the stage-by-stage mode, against one reference ----

def endpoint_overrides(out: Path, llm: Path, tokenizer: Path, *extra: str) -> list[str]:
    return [f"out={out}", f"llm={llm}", "llm_overrides=[]", f"tokenizer={tokenizer}", *extra]


@pytest.fixture(scope="module")
def endpoint_run(ray_local, tiny_cache, tmp_path_factory):
    """An uninterrupted stream-mode run through the zero-fault endpoint (answers depend only
    on the request, so any other run through it must end with the same records)."""
    from mnemoray.distributed.data.synth_rolememo import run_rolememo
    from mnemoray.llm.fault_server import FaultConfig, FaultServer
    from mnemoray.llm.tiny import ensure_tiny

    root = tmp_path_factory.mktemp("endpoint")
    tokenizer = ensure_tiny(tiny_cache, arch="qwen2", seed=0)
    with FaultServer(FaultConfig(latency_ms=30, vary_strings=True)) as url:
        llm = root / "llm.yaml"
        llm.write_text(f"engine: openai\nmodel: fault-model\nbase_url: {url}\nmax_in_flight: 16\n"
                       "timeout_s: 10\nmax_retries: 2\nstructured_retries: 1\n")
        cfg = load_config(RoleMemoConfig, LOCAL, endpoint_overrides(root / "reference", llm, tokenizer))
        stats = run_rolememo(cfg)
        yield {"cfg": cfg, "stats": stats, "llm": llm, "tokenizer": tokenizer, "root": root}


def engine_actor_pids() -> list[int]:
    """Processes of the fleet's engine actors (Ray titles an actor process `ray::<class>`)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if (proc / "cmdline").read_bytes().startswith(b"ray::BatchAnswerer"):
                    pids.append(int(proc.name))
    return pids


def test_the_stream_reaches_every_stage_through_the_endpoint(endpoint_run):
    stats = endpoint_run["stats"]
    assert stats["histories"]["count"] == 8
    for stage in STAGES:  # nothing lost between stages: every source record was an input
        source = StageStore(endpoint_run["cfg"].out, stage.source).read("kept", ["id"]).num_rows
        assert stats["stages"][stage.name]["inputs"] == source > 0, stage.name
    assert all(r["mode"] == "stream" for r in stats["this_run"] if r["stage"] != "histories")


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds actor processes through /proc")
def test_a_killed_engine_worker_is_restarted_and_nothing_is_lost(endpoint_run, tmp_path):
    import threading

    from mnemoray.distributed.data.synth_rolememo import run_rolememo

    cfg = load_config(RoleMemoConfig, LOCAL, endpoint_overrides(tmp_path / "run", endpoint_run["llm"],
                                                                 endpoint_run["tokenizer"]))
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(stats=run_rolememo(cfg)))
    runner.start()
    done_dir = cfg.out / "stages" / "insight_check" / "done"
    killed = []
    while runner.is_alive() and not killed:
        pids = engine_actor_pids()
        if pids and done_dir.is_dir() and any(done_dir.glob("part-*.parquet")):
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])
        time.sleep(0.1)
    runner.join()
    assert killed, "the run finished before its engine worker could be killed"
    assert "stats" in result, "the run did not finish"
    assert kept_ids(cfg.out) == kept_ids(endpoint_run["cfg"].out)
    assert not any(r.startswith("llm_") for s in result["stats"]["stages"].values() for r in s["rejected_by_reason"])


def test_the_stage_by_stage_mode_builds_the_same_dataset(endpoint_run, tmp_path):
    from mnemoray.distributed.data.synth_rolememo import run_rolememo

    cfg = load_config(RoleMemoConfig, LOCAL, endpoint_overrides(tmp_path / "run", endpoint_run["llm"],
                                                                 endpoint_run["tokenizer"], "ray.mode=stages"))
    stats = run_rolememo(cfg)
    assert {r["mode"] for r in stats["this_run"] if r["stage"] != "histories"} == {"stages"}
    assert kept_ids(cfg.out) == kept_ids(endpoint_run["cfg"].out)
    assert truth_ids(cfg.out) == truth_ids(endpoint_run["cfg"].out)
