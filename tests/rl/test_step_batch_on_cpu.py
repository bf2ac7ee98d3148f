"""The controller's step batch without Ray: dynamic sampling swaps zero-variance groups for
fresh ones and keeps the batch size; ADRPO weights come from reward extras; a resumed step
draws the same prompts. `sample` here is a deterministic stand-in for engines + reward pool."""

from __future__ import annotations

import pytest

from mnemoray.config import load_config
from mnemoray.config.grpo import GRPOConfig
from mnemoray.distributed.train.grpo import collect_step, step_prompts
from mnemoray.rewards.scoring import RewardResult
from mnemoray.rl.advantages import drop_and_refill
from mnemoray.rl.environments.prompts import RLPrompt
from mnemoray.rl.sequences import Rollout
from mnemoray.rl.step_batch import AttributionSettings, keep_batch_size, sample_attribution
from repo_paths import REPO

N = 4


def cfg(*overrides: str) -> GRPOConfig:
    return load_config(GRPOConfig, REPO / "configs/train/grpo_local.yaml",
                       ["rollout.n=4", "rollout.prompts_per_step=2", *overrides])


PROMPTS = [RLPrompt(f"p{i}", ({"role": "user", "content": f"q{i}"},), "t", None,
                    {"memory_type": "episodic" if i % 2 else "semantic"}) for i in range(6)]
FLAT = {"p0", "p2"}  # prompts whose groups all get the same reward


class Sampler:
    """n rollouts per slot; flat prompts score 1.0 for all, the others 0/1 alternating."""

    def __init__(self, extras=lambda prompt_id, k: {}):
        self.calls: list[list[str]] = []
        self.extras = extras

    def __call__(self, slots, seed):
        self.calls.append([key for key, _ in slots])
        rollouts, results = [], []
        for key, prompt in slots:
            for k in range(N):
                rollouts.append(Rollout(key, k, [1], [2, 3], f"{prompt.id}-{k}", True))
                score = 1.0 if prompt.id in FLAT else float(k % 2)
                results.append(RewardResult(score, self.extras(prompt.id, k)))
        return rollouts, results


def test_keep_batch_size_tops_up_with_dropped_groups():
    refill = drop_and_refill([1, 1, 0, 1, 2, 2], [3, 3], group_size=2)  # groups 0 and 2 flat; pool flat too
    assert refill.groups == [1] and refill.shortfall == 2
    assert keep_batch_size(refill, batch_groups=3, group_size=2) == [2, 3, 0, 1, 4, 5]
    full = drop_and_refill([1, 1, 0, 1], [0, 1], group_size=2)
    assert keep_batch_size(full, batch_groups=2, group_size=2) == [2, 3, 4, 5]


def test_without_dynamic_sampling_the_step_is_its_own_prompts():
    sample = Sampler()
    rollouts, scores, weights, record = collect_step(cfg(), PROMPTS, 1, sample)
    assert len(sample.calls) == 1 and len(rollouts) == 8 and weights == [1.0] * 8
    assert not any(k.startswith("dynamic/") for k in record)


def test_dynamic_sampling_swaps_flat_groups_and_keeps_the_batch_size():
    c = cfg("algorithm.dynamic_sampling=true", "algorithm.max_refill_rounds=3", "schedule.seed=1")
    for step in range(1, 6):
        sample = Sampler()
        rollouts, scores, weights, record = collect_step(c, PROMPTS, step, sample)
        assert len(rollouts) == len(scores) == 8  # always two whole groups
        own = [p.id for _, p in step_prompts(PROMPTS, step, 2, 1)]
        flat_own = sum(p in FLAT for p in own)
        assert record["dynamic/dropped"] == flat_own
        groups = [rollouts[g * N].text.split("-")[0] for g in range(2)]
        if record["dynamic/shortfall"] == 0:
            assert not FLAT & set(groups), (step, groups)  # only informative groups train
        assert record["dynamic/rounds"] == len(sample.calls) - 1 <= 3
        assert len({r.id for r in rollouts}) == 8  # refill rollouts have their own ids
        again = collect_step(c, PROMPTS, step, Sampler())  # a resumed step sees the same batch
        assert [r.id for r in again[0]] == [r.id for r in rollouts]


def test_attribution_weights_boost_the_dominant_type():
    def extras(prompt_id, k):
        return {"attribution_counts": {"episodic": 2, "core": 5} if int(prompt_id[1]) % 2
                                       else {"semantic": 1}}
    c = cfg("algorithm.attribution={alpha: 3.0}")
    rollouts, _, weights, record = collect_step(c, PROMPTS, 1, Sampler(extras))
    types = [PROMPTS[int(r.text[1])].extra_info["memory_type"] for r in rollouts]
    assert record["attribution/dominant"] in ("episodic", "semantic")
    assert weights == [3.0 if t == record["attribution/dominant"] else 1.0 for t in types]
    assert record["attribution/boosted"] == sum(w == 3.0 for w in weights) and record["attribution/invalid"] == 0


def test_invalid_attribution_counts_are_counted_not_fatal():
    infos = [{"memory_type": "episodic"}, {"memory_type": "semantic"}, {"memory_type": "episodic"}]
    extras = [{"attribution_counts": {"episodic": 3}}, {"attribution_counts": "lots"},
              {"attribution_counts": {"episodic": -1}}]
    attribution, invalid = sample_attribution(extras, infos, AttributionSettings(alpha=4.0))
    assert invalid == 2 and attribution.weights == [4.0, 1.0, 4.0] and attribution.totals == {"episodic": 3}


@pytest.mark.parametrize("boost_core,expected", [(False, None), (True, "core")])
def test_core_is_boosted_only_when_allowed(boost_core, expected):
    attribution, _ = sample_attribution([{"attribution_counts": {"core": 4}}] * 2,
                                        [{"memory_type": "core"}, {"memory_type": "episodic"}],
                                        AttributionSettings(boost_core=boost_core))
    assert attribution.dominant == expected
