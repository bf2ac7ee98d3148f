"""The membuilder-qa reward on real parts: a MemBuilder build log, QA generated once by the
fault endpoint (an OpenAI-compatible server) into the cache, and a pool of reward actors on
real local Ray that answer and judge through that endpoint with real MiniLM embeddings.

The fault endpoint answers every schema with its first valid instance (the judge's first
label is CORRECT), so task_r = 1 and each score is the length factor, checked by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mnemoray.config import MemoryConfig
from mnemoray.config.llm import EngineConfig
from mnemoray.config.rl import RewardPoolConfig
from mnemoray.llm.fault_server import FaultConfig
from mnemoray.memory.membuilder import MemBuilderMemory
from mnemoray.memory.trajectory import write_jsonl
from mnemoray.records import Session, Turn
from mnemoray.rewards.items import RewardItem

pytestmark = pytest.mark.integration


def script(call, request):
    if call == "membuilder/core":
        return {"operations": [{"action": "APPEND", "old": "", "text": "Sam has a beagle."}]}
    return {"operations": [{"action": "ADD", "ids": [], "text": f"{call.split('/')[1]}: Biscuit the beagle"}]}


def test_reward_actors_answer_and_judge_from_the_rollouts_memory(ray_local, tmp_path: Path, scripted, embedder,
                                                                  fault_server):
    from mnemoray.distributed.actors.reward_pool import RewardPool
    from mnemoray.llm.registry import build_engine
    from mnemoray.rl.environments.membuilder_qa import prepare_membuilder_qa

    memory = MemBuilderMemory(MemoryConfig(name="membuilder"), engine=scripted(script), embedder=embedder,
                              max_retries=0)
    memory.log.history_id = "h"
    for i in (1, 2):
        memory.ingest(Session(id=f"h:S{i}", timestamp=f"2023-05-0{i}",
                              turns=[Turn(id=f"h:S{i}#0", speaker="Sam", text=f"Day {i} with Biscuit.", index=0)]))
    write_jsonl(memory.log.entries, tmp_path / "trajectories.jsonl")
    server = fault_server(FaultConfig())
    engine_cfg = EngineConfig(engine="openai", model="fault-model", base_url=server.url, max_retries=0)
    prompts, _, report = prepare_membuilder_qa(tmp_path, build_engine(engine_cfg))
    assert report.generated == 2 and len(prompts) == 8
    generated = sum(server.counters.snapshot()["outcomes"].values())
    assert generated == report.calls == 2 + 3  # S1: single + temporal; S2: three types

    episodic = next(p for p in prompts if p.extra_info["memory_type"] == "episodic")
    core = next(p for p in prompts if p.extra_info["memory_type"] == "core")
    parsed = json.loads(episodic.ground_truth)
    triple = {"operations": parsed["operations"] * 3}  # 3x the expert's length: rho ~ 3 -> P = 1
    items = [RewardItem("same", "membuilder", episodic.ground_truth, None, episodic.extra_info),
             RewardItem("long", "membuilder", json.dumps(triple), None, episodic.extra_info),
             RewardItem("junk", "membuilder", "I would add a note.", None, episodic.extra_info),
             RewardItem("core", "membuilder", core.ground_truth, None, core.extra_info)]
    pool = RewardPool.from_config(RewardPoolConfig(reward="membuilder-qa", engine=engine_cfg, num_actors=2,
                                                   in_flight_per_actor=2, cpus_per_actor=0.1))
    try:
        scored = pool.score(items)
    finally:
        pool.close()
    assert not any(r.failed for r in scored.values()), {k: r.error for k, r in scored.items()}
    same, long, junk, kept = scored["same"], scored["long"], scored["junk"], scored["core"]
    assert same.extras["qa_total"] == 5 and same.extras["qa_failed"] == 0 and same.extras["match"] == "judge"
    assert same.extras["task_reward"] == 1.0 and same.score == 1.0  # rho = 1
    assert long.extras["length_penalty"] == 1.0 and long.score == pytest.approx(0.2)  # 1 x (1 - 0.8)
    assert junk.score == 0.0 and junk.extras["format_ok"] is False
    assert kept.score == 1.0 and kept.extras["core_tokens"] < 150  # a short core block: no penalty
    # 3 rollouts x (5 answers + 5 verdicts) (the junk one asked nothing); no question generated again
    outcomes = server.counters.snapshot()["outcomes"]
    assert sum(outcomes.values()) - generated == 3 * 5 * 2


def test_grpo_runs_the_membuilder_qa_reward_in_its_loop(ray_local, tmp_path: Path, tiny_cache: Path, scripted,
                                                         embedder, fault_server):
    """The whole path: grpo-data's prompts (state, cached QA) -> rollouts of the tiny policy ->
    the membuilder-qa reward pool (fault endpoint judge) -> ADRPO attribution -> update. The
    random policy writes no valid ops, so every score is a real 0 (format failures), not a
    failed reward."""
    from mnemoray.config import load_config
    from mnemoray.config.grpo import GRPOConfig
    from mnemoray.distributed.train.grpo import run_grpo
    from mnemoray.llm.registry import build_engine
    from mnemoray.rl.environments.membuilder_qa import prepare_membuilder_qa
    from repo_paths import REPO

    memory = MemBuilderMemory(MemoryConfig(name="membuilder"), engine=scripted(script), embedder=embedder,
                              max_retries=0)
    memory.log.history_id = "h"
    memory.ingest(Session(id="h:S1", timestamp="2023-05-01",
                          turns=[Turn(id="h:S1#0", speaker="Sam", text="I walk Biscuit daily.", index=0)]))
    build = tmp_path / "build"
    build.mkdir()
    write_jsonl(memory.log.entries, build / "trajectories.jsonl")
    server = fault_server(FaultConfig())
    engine_cfg = EngineConfig(engine="openai", model="fault-model", base_url=server.url, max_retries=0)
    prompts, _, _ = prepare_membuilder_qa(build, build_engine(engine_cfg))
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"id": p.id, "prompt": list(p.messages), "data_source": p.data_source,
                                        "ground_truth": p.ground_truth, "extra_info": p.extra_info}) + "\n"
                            for p in prompts))
    cfg = load_config(GRPOConfig, REPO / "configs/train/grpo_local.yaml", [
        "name=mbqa", f"out={tmp_path}", f"model.tiny_cache_dir={tiny_cache}", f"environment.path={data}",
        "ray.num_cpus=null", "reward.reward=membuilder-qa", f"reward.engine.base_url={server.url}",
        "reward.engine.engine=openai", "reward.engine.model=fault-model", "rollout.n=2", "rollout.prompts_per_step=2",
        "rollout.max_new_tokens=8", "schedule.steps=2", "schedule.save_every=2", "algorithm.attribution.alpha=4"])
    result = run_grpo(cfg)
    assert result.error is None, result.error
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    for r in records:
        assert r["reward_failed"] == 0 and r["reward_mean"] == 0.0 and r["reward/format_failed"] == 1.0
        assert r["attribution/dominant"] is None and r["attribution/invalid"] == 0
