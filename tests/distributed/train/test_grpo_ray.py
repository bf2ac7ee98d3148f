"""GRPO end to end on real local Ray: 2 DeepSpeed policy workers (Ray Train), an hf rollout
engine, a pool of reward actors; the tiny model learns the toy task, a killed policy worker
restarts from its checkpoint, and a finished run is not trained again."""

from __future__ import annotations

import json
import os
import signal
import statistics
import threading
import time
from pathlib import Path

import pytest

from mnemoray.config import load_config
from mnemoray.config.grpo import GRPOConfig
from repo_paths import REPO

pytestmark = pytest.mark.integration

TOY = REPO / "configs/train/data/toy_prompts.jsonl"


def _cfg(tmp_path: Path, tiny_cache: Path, name: str, *overrides: str) -> GRPOConfig:
    return load_config(GRPOConfig, REPO / "configs/train/grpo_local.yaml",
                       [f"name={name}", f"out={tmp_path}", f"model.tiny_cache_dir={tiny_cache}",
                        f"environment.path={TOY}", "ray.num_cpus=null", *overrides])


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()]


def test_toy_task_reward_rises_and_the_run_exports_and_resumes(ray_local, tmp_path: Path, tiny_cache: Path):
    from mnemoray.distributed.train.grpo import run_grpo

    cfg = _cfg(tmp_path, tiny_cache, "toy")
    result = run_grpo(cfg)
    assert result.error is None, result.error
    records = _records(result.run_dir)
    assert [r["step"] for r in records] == list(range(1, 31))
    rewards = [r["reward_mean"] for r in records]
    first, last = statistics.fmean(rewards[:5]), statistics.fmean(rewards[-5:])
    assert last > first + 0.15, rewards
    for r in records:  # every step reports what the issue asks for
        assert {"reward_std", "kl", "approx_kl", "clip_frac_low", "clip_frac_high",
                "entropy", "response_len_mean", "response_clipped_frac", "zero_std_groups"} <= r.keys()
        assert set(r["timing"]) == {"generate_s", "reward_s", "ref_s", "update_s", "sync_s", "step_s"}
        assert r["reward_failed"] == 0
    assert (result.run_dir / "hf" / "model.safetensors").exists()
    assert (result.run_dir / "report.md").read_text().count("reward_mean") == 1
    assert (result.run_dir / "curves.png").stat().st_size > 0
    # the export is an ordinary checkpoint: the hf engine loads it and answers
    from mnemoray.llm.hf_engine import HFEngine
    from mnemoray.llm.types import ChatMessage, ChatRequest

    (answer,) = HFEngine(str(result.export_dir)).generate(
        [ChatRequest(id="x", messages=[ChatMessage(role="user", content="hi")])])
    assert answer.ok
    # a finished run rerun: nothing trained again, no duplicate metrics
    again = run_grpo(cfg)
    assert again.error is None and [r["step"] for r in _records(again.run_dir)] == list(range(1, 31))
    assert [e["event"] for e in _events(again.run_dir)].count("start") == 2


def test_killed_policy_worker_restarts_from_its_last_checkpoint(ray_local, tmp_path: Path, tiny_cache: Path):
    from mnemoray.distributed.train.grpo import run_grpo

    cfg = _cfg(tmp_path, tiny_cache, "killed", "schedule.steps=12", "schedule.save_every=4")
    run_dir = cfg.out / cfg.name
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(result=run_grpo(cfg)), daemon=True)
    thread.start()
    killed = None
    while killed is None and thread.is_alive():
        events = _events(run_dir) if (run_dir / "events.jsonl").exists() else []
        checkpoints = [e for e in events if e["event"] == "checkpoint"]
        if checkpoints:
            killed = checkpoints[-1]
            os.kill(killed["pid"], signal.SIGKILL)  # the rank-0 policy worker dies mid-run
        else:
            time.sleep(0.2)  # polling the run's event log, not timing the run
    thread.join()
    assert killed is not None, "training ended before a checkpoint was seen"
    result = box["result"]
    assert result.error is None, result.error
    starts = [e for e in _events(run_dir) if e["event"] == "start"]
    assert len(starts) == 2 and starts[1]["step"] == killed["step"] and starts[1]["pid"] != killed["pid"]
    steps = [r["step"] for r in _records(run_dir)]
    assert steps == list(range(1, 13))  # steps after the checkpoint were recomputed, none twice
    assert (run_dir / "hf" / "model.safetensors").exists()


def test_custom_reward_function_from_a_file(ray_local, tmp_path: Path, tiny_cache: Path):
    from mnemoray.distributed.train.grpo import run_grpo

    reward = tmp_path / "my_reward.py"
    reward.write_text(
        "import asyncio\n"
        "async def compute_score(data_source, solution_str, ground_truth, extra_info=None):\n"
        "    await asyncio.sleep(0)\n"
        "    return {'score': float(len(solution_str) > 10), 'length': len(solution_str),\n"
        "            'attribution_counts': {'episodic': 1}}\n")
    cfg = _cfg(tmp_path, tiny_cache, "custom", "schedule.steps=2", f"reward.reward={reward}:compute_score",
               "algorithm.dynamic_sampling=true", "algorithm.attribution={alpha: 2.0}", "algorithm.log_kl=false")
    result = run_grpo(cfg)
    assert result.error is None, result.error
    records = _records(result.run_dir)
    assert [r["step"] for r in records] == [1, 2]
    for r in records:
        assert r["reward_failed"] == 0 and r["reward/length"] > 0
        # a (mostly) flat binary reward: refill rounds ran, the batch kept its 2 groups of 8
        assert 0 <= r["dynamic/rounds"] <= 2 and r["groups"] == 2
        assert r["dynamic/dropped"] == r["dynamic/refilled"] + r["dynamic/shortfall"]
        assert r["attribution/episodic"] == 16 and r["attribution/boosted"] == 16
        assert "kl" not in r  # kl_coef 0 and log_kl off: no reference model, no reference pass
    assert "reward_mean" in (result.run_dir / "report.md").read_text()


def test_colocated_and_broadcast_rollouts_train_exactly_as_an_object_store_engine(ray_local, tmp_path: Path,
                                                                                  tiny_cache: Path):
    """Three ways the sampler gets the policy's weights, the same rollouts (same seed, same
    weights, one torch thread each), so the same rewards and losses step by step:
    - `engine`: a rollout engine actor, weights through the object store (the default);
    - `broadcast`: a rollout engine actor, weights broadcast over a gloo group from rank 0;
    - `colocated`: rank 0 samples with its own DeepSpeed module; no actor, no weight sync."""
    from mnemoray.distributed.train.grpo import run_grpo

    runs = {}
    # the colocated run also uses ZeRO-0, whose single rank skips the gradient all-reduce: the
    # same updates as ZeRO-2 (up to float rounding)
    for name, colocate, zero, sync in (("engine", "false", 2, "object_store"), ("broadcast", "false", 2, "broadcast"),
                                       ("colocated", "true", 0, "object_store")):
        cfg = _cfg(tmp_path, tiny_cache, name, "schedule.steps=2", "ray.workers=1", f"rollout.colocate={colocate}",
                   "algorithm.kl_coef=0.01", f"deepspeed.zero_stage={zero}", f"rollout.weight_sync={sync}")
        result = run_grpo(cfg)
        assert result.error is None, result.error
        runs[name] = (_records(result.run_dir), _events(result.run_dir))
    engine = runs["engine"][0]
    for other in ("broadcast", "colocated"):
        records = runs[other][0]
        assert [r["step"] for r in records] == [1, 2]
        for a, b in zip(engine, records):
            for key in ("reward_mean", "reward_std", "response_len_mean", "loss", "kl"):
                assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-8), (other, a["step"], key)
    events = runs["colocated"][1]
    (placement,) = [e for e in events if e["event"] == "placement"]
    (start,) = [e for e in events if e["event"] == "start"]
    assert start["engine"]["zero_stage"] == 0 and start["engine"]["backward_allreduce"] is False
    assert placement["rollout"] == [] and placement["colocated"] is True
    assert all(r["timing"]["sync_s"] < 0.01 for r in runs["colocated"][0])  # nothing pushed
    (placement,) = [e for e in runs["broadcast"][1] if e["event"] == "placement"]
    (synced,) = [e for e in runs["broadcast"][1] if e["event"] == "weight_sync"]
    assert placement["weight_sync"] == "broadcast" and len(placement["rollout"]) == 1
    assert synced == {**synced, "method": "broadcast", "groups_built": 1, "fallbacks": 0}


def test_dualmem_trajectories_train_through_the_pool(ray_local, tmp_path: Path, tiny_cache: Path, fault_server):
    """environment.trajectories on real Ray: the policy writes DualMem memory chunk by chunk through
    the rollout engine, the reward actors reply and judge through an endpoint that fails 30 % of
    calls (retried), and every chunk step is trained on."""
    from mnemoray.distributed.train.grpo import run_grpo
    from mnemoray.llm.fault_server import FaultConfig

    server = fault_server(FaultConfig(fault_rate=0.3, seed=3))
    engine = f'{{engine: openai, model: fault-model, base_url: "{server.url}", max_retries: 8}}'
    cfg = load_config(GRPOConfig, REPO / "configs/train/grpo_dualmem_local.yaml", [
        "name=dualmem", f"out={tmp_path}", f"model.tiny_cache_dir={tiny_cache}", "ray.num_cpus=null",
        f"reward.engine={engine}", "rollout.n=2", "rollout.max_new_tokens=12", "schedule.steps=2",
        "schedule.save_every=2"])
    result = run_grpo(cfg)
    assert result.error is None, result.error
    assert result.prompts == 2  # the two LoCoMo histories of the shared sample
    records = _records(result.run_dir)
    assert [r["step"] for r in records] == [1, 2]
    for r in records:
        # 1 history x 2 trajectories x 3 chunk steps (18 turns in chunks of 6), each step one sample
        assert r["trajectory/steps_mean"] == 3 and r["samples"] == 6 and r["groups"] == 1
        assert r["trajectory/queries"] == 4 and r["reward_failed"] == 0  # every faulted call was retried
        assert {"reward/factual_use", "reward/logic_persona_fit", "reward/value_safety", "reward/format_failed",
                "kl", "entropy", "response_len_mean"} <= r.keys()
        assert 0.0 <= r["reward_mean"] <= 1.0 and set(r["timing"]) == {"generate_s", "reward_s", "ref_s",
                                                                        "update_s", "sync_s", "step_s"}
    outcomes = server.counters.snapshot()["outcomes"]
    assert outcomes.get("ok", 0) >= 2 * 4 * 2 and sum(v for k, v in outcomes.items() if k != "ok") > 0
    assert (result.run_dir / "hf" / "model.safetensors").exists() and (result.run_dir / "report.md").exists()


def test_the_cluster_preset_trains_on_cpu_with_a_partitioned_bf16_reference(ray_local, tmp_path: Path,
                                                                           tiny_cache: Path):
    """configs/train/grpo_cluster.yaml with only its hardware and services swapped for this
    machine's (tiny model, CPU workers, an hf engine, the toy reward): ZeRO-3 in bf16 with
    gradient checkpointing, weights broadcast to the engine, 4 minibatches per step and the
    KL reference partitioned like the policy (that it starts equal to the policy:
    tests/train/test_reference_on_cpu.py)."""
    from mnemoray.distributed.train.grpo import run_grpo

    cfg = load_config(GRPOConfig, REPO / "configs/train/grpo_cluster.yaml", [
        "name=cluster-on-cpu", f"out={tmp_path}", "model.path=null", "model.tiny={arch: qwen2, seed: 0}",
        f"model.tiny_cache_dir={tiny_cache}", f"environment.path={TOY}",
        "reward.reward=keyword-count", "reward.engine=null", "reward.num_actors=1", "reward.rate_limit_per_s=null",
        "rollout.engine=hf", "rollout.engine_options={}", "rollout.engines=1", "rollout.device=cpu",
        "rollout.gpus_per_engine=0", "rollout.cpus_per_engine=0.5", "rollout.prompts_per_step=2",
        "rollout.max_new_tokens=16",
        "optim.lr=1.0e-2", "optim.warmup_steps=0", "algorithm.kl_coef=0.05", "algorithm.micro_batch_size=2",
        "schedule.steps=2", "schedule.save_every=2", "ray.address=null", "ray.num_cpus=null", "ray.workers=2",
        "ray.cpus_per_worker=0.5", "ray.use_gpu=false", "ray.accelerator=cpu", "ray.torch_threads=1"])
    assert (cfg.deepspeed.zero_stage, cfg.deepspeed.dtype, cfg.rollout.weight_sync) == (3, "bf16", "broadcast")
    assert cfg.model.gradient_checkpointing and cfg.algorithm.minibatches == 4
    result = run_grpo(cfg)
    assert result.error is None, result.error
    records = _records(result.run_dir)
    assert [r["step"] for r in records] == [1, 2]
    kls = [r["kl"] for r in records]  # 4 optimizer steps per rollout batch: the policy drifts step by step
    assert 0.0 < kls[0] < kls[1], kls
    events = _events(result.run_dir)
    (start,) = [e for e in events if e["event"] == "start"]
    (reference,) = [e for e in events if e["event"] == "reference"]
    (synced,) = [e for e in events if e["event"] == "weight_sync"]
    assert start["engine"]["zero_stage"] == 3 and start["engine"]["param_dtype"] == "bfloat16"
    assert start["engine"]["gradient_checkpointing"] is True
    assert reference == {**reference, "zero_stage": 3, "dtype": "bfloat16"}
    assert synced["fallbacks"] == 0
    assert (result.run_dir / "hf" / "model.safetensors").exists()
