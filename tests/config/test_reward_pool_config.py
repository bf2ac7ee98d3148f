"""RewardPoolConfig and the GRPO config: reward names from the registry, file references that
must exist, judge rewards that need an engine, batch shapes that must split over workers."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from mnemoray.config import ConfigError, load_config
from mnemoray.config.grpo import GRPOConfig
from mnemoray.config.rl import RewardPoolConfig
from repo_paths import REPO


def test_registered_and_file_rewards(tmp_path: Path):
    assert RewardPoolConfig(reward="keyword-count").reward == "keyword-count"
    (tmp_path / "r.py").write_text("def compute_score(*a): return 1\n")
    assert RewardPoolConfig(reward=f"{tmp_path}/r.py:compute_score").num_actors == 2
    assert RewardPoolConfig(reward=f"{tmp_path}/r.py").reward.endswith("r.py")


@pytest.mark.parametrize("reward,message", [
    ("nope", "unknown reward 'nope'; choose one of"),
    ("custom", "give a custom reward as 'path/to/file.py:function'"),
    ("missing/file.py:fn", "reward file missing/file.py does not exist"),
    ("persona-judge", "calls an LLM judge: set reward.engine"),
])
def test_bad_rewards_are_named(reward: str, message: str):
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RewardPoolConfig(reward=reward)


def test_judge_reward_with_engine():
    cfg = RewardPoolConfig(reward="persona-judge", engine={"engine": "hf", "tiny": {}}, rate_limit_per_s=5)
    assert cfg.engine.engine == "hf" and cfg.rate_limit_per_s == 5


def test_grpo_config_reports_every_bad_key_at_once():
    with pytest.raises(ConfigError) as err:
        load_config(GRPOConfig, REPO / "configs/train/grpo_local.yaml",
                    ["environment.name=nowhere", "reward.reward=nope", "rollout.n=1"])
    text = str(err.value)
    assert "environment.name" in text and "reward.reward" in text and "rollout.n" in text


def test_samples_must_split_over_workers_and_minibatches():
    with pytest.raises(ConfigError, match="must split evenly"):
        load_config(GRPOConfig, REPO / "configs/train/grpo_local.yaml", ["rollout.n=3", "rollout.prompts_per_step=1"])
    cfg = load_config(GRPOConfig, REPO / "configs/train/grpo_local.yaml", ["algorithm.micro_batch_size=3"])
    assert cfg.samples_per_step == 16 and cfg.micro_batches == 3  # 8 samples per worker in chunks of 3


def test_colocated_rollouts_need_whole_weights_on_rank_zero():
    cfg = load_config(GRPOConfig, REPO / "configs/train/grpo_local.yaml", ["rollout.colocate=true"])
    assert cfg.rollout.colocate and cfg.deepspeed.zero_stage == 2
    with pytest.raises(ConfigError, match=r"rollout.colocate needs whole weights on rank 0: deepspeed.zero_stage"):
        load_config(GRPOConfig, REPO / "configs/train/grpo_local.yaml",
                    ["rollout.colocate=true", "deepspeed.zero_stage=3"])


def test_weight_sync_is_named_and_refused_with_colocation():
    cfg = load_config(GRPOConfig, REPO / "configs/train/grpo_local.yaml", ["rollout.weight_sync=broadcast"])
    assert cfg.rollout.weight_sync == "broadcast" and cfg.rollout.sync_bucket_mb == 256
    with pytest.raises(ConfigError, match=r"rollout.colocate syncs no weights: drop rollout.weight_sync"):
        load_config(GRPOConfig, REPO / "configs/train/grpo_local.yaml",
                    ["rollout.colocate=true", "rollout.weight_sync=broadcast"])
    with pytest.raises(ConfigError, match=r"weight_sync"):
        load_config(GRPOConfig, REPO / "configs/train/grpo_local.yaml", ["rollout.weight_sync=nccl"])


def test_engine_options_are_checked_against_the_sampler_before_ray_starts():
    local = REPO / "configs/train/grpo_local.yaml"
    assert load_config(GRPOConfig, local, ["rollout.engine_options={batch_size: 4}"]).rollout.engine_options == {
        "batch_size": 4}
    with pytest.raises(ConfigError, match=r"engine_options \['nope'\] are not options of the 'hf' rollout engine "
                                          r"\(it takes \['batch_size'\]\)"):
        load_config(GRPOConfig, local, ["rollout.engine_options={nope: 1}"])
    with pytest.raises(ConfigError, match=r"cannot set \['dtype'\]: use rollout.device and rollout.dtype"):
        load_config(GRPOConfig, local, ["rollout.engine_options={dtype: float16}"])
    # vllm's sampler passes its options on to vllm.LLM, which checks them where it runs
    vllm = load_config(GRPOConfig, local, ["rollout.engine=vllm", "rollout.engine_options={max_model_len: 4096}"])
    assert vllm.rollout.engine_options == {"max_model_len": 4096}
    cluster = load_config(GRPOConfig, REPO / "configs/train/grpo_cluster.yaml")
    assert 0 < cluster.rollout.engine_options["gpu_memory_utilization"] < 0.9
