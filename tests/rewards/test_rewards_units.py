"""Reward functions against hand-computed values: length penalty table, attribution weights,
dense QA reward and question mix, calling rewards safely (sync, async, failures), the
registry and custom reward files."""

from __future__ import annotations

import asyncio
import textwrap

import numpy as np
import pytest

from mnemoray.rewards.attribution import attribution_weights, dominant_type
from mnemoray.rewards.length_penalty import (
    approx_tokens,
    core_penalty,
    penalized_reward,
    ratio_penalty,
    relative_penalty,
)
from mnemoray.rewards.length_penalty import compute_score as length_score
from mnemoray.rewards.qa import compute_score as qa_score
from mnemoray.rewards.qa import qa_mix, qa_task_reward
from mnemoray.rewards.registry import REWARDS, RewardLoadError, RewardSpec, load_custom_reward, register_reward
from mnemoray.rewards.scoring import RewardResult, call_reward, summarize

# ---------------------------------------------------------------- length penalty

@pytest.mark.parametrize("chars,tokens,penalty", [
    (0, 0.0, 0.0),
    (400, 100.0, 0.0),
    (600, 150.0, 0.0),  # boundary: no penalty at 150 tokens
    (604, 151.0, 0.004),  # 1 / 250
    (1100, 275.0, 0.5),
    (1350, 337.5, 0.75),
    (1600, 400.0, 1.0),  # boundary: full penalty at 400 tokens
    (4000, 1000.0, 1.0),
])
def test_core_penalty_table(chars, tokens, penalty):
    assert approx_tokens("x" * chars) == tokens
    assert core_penalty(tokens) == pytest.approx(penalty)


@pytest.mark.parametrize("rho,penalty", [
    (1.0, 0.0),
    (0.5, 0.0),  # lower boundary of the free band
    (1.3, 0.0),  # upper boundary of the free band
    (1.44, 0.2),  # (1.44 - 1.3) / 0.7
    (1.65, 0.5),
    (2.0, 1.0),
    (3.0, 1.0),  # capped at 1
    (0.44, 0.2),  # (0.5 - 0.44) / 0.3
    (0.35, 0.5),
    (0.2, 1.0),
    (0.0, 1.0),  # capped at 1 (would be 5/3)
])
def test_ratio_penalty_table(rho, penalty):
    assert ratio_penalty(rho) == pytest.approx(penalty)


def test_relative_penalty_uses_lengths_in_one_unit():
    assert relative_penalty(13, 10) == 0.0 and relative_penalty(5, 10) == 0.0  # exactly at 1.3 and 0.5
    assert relative_penalty(165, 100) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="expert length"):
        relative_penalty(10, 0)


@pytest.mark.parametrize("task,penalty,lam,format_ok,reward", [
    (0.8, 0.0, 0.8, True, 0.8),
    (0.8, 0.5, 0.8, True, 0.48),  # 0.8 * (1 - 0.4)
    (0.8, 1.0, 0.8, True, 0.16),  # 0.8 * (1 - 0.8)
    (1.0, 1.0, 0.5, True, 0.5),
    (1.0, 0.0, 0.8, False, 0.0),  # a format failure scores 0
])
def test_penalized_reward(task, penalty, lam, format_ok, reward):
    assert penalized_reward(task, penalty, lam, format_ok) == pytest.approx(reward)


def test_length_penalised_compute_score_reads_extra_info():
    core = call_reward(length_score, "membuilder", "x" * 1100, None, {"memory_type": "core", "task_reward": 0.8})
    assert core.score == pytest.approx(0.48) and not core.failed
    assert core.extras["tokens"] == 275.0 and core.extras["length_penalty"] == pytest.approx(0.5)
    # episodic: rho = 165 / 100 = 1.65 -> P = 0.5; task_r from judgements 4 / 5 = 0.8
    info = {"memory_type": "episodic", "judgements": [True, True, True, True, False], "expert_length": 100}
    epi = call_reward(length_score, "membuilder", "y" * 165, None, info)
    assert epi.score == pytest.approx(0.48) and epi.extras["rho"] == pytest.approx(1.65)
    # the expert's text as ground_truth gives the expert length in chars
    sem = call_reward(length_score, "membuilder", "y" * 165, "z" * 100, {"memory_type": "semantic", "task_reward": 1})
    assert sem.score == pytest.approx(0.6)
    tuned = call_reward(length_score, "m", "y" * 165, "z" * 100,
                        {"memory_type": "semantic", "task_reward": 1, "length_lambda": 0.5})
    assert tuned.score == pytest.approx(0.75)


def test_length_penalised_format_failure_is_a_zero_not_an_error():
    out = call_reward(length_score, "m", "garbage", None, {"memory_type": "core", "task_reward": 1.0,
                                                          "format_ok": False})
    assert out.score == 0.0 and not out.failed and out.extras["format_ok"] is False


@pytest.mark.parametrize("info,needle", [
    ({"task_reward": 1.0}, "memory_type"),
    ({"memory_type": "episodic", "task_reward": 1.0}, "expert length"),
    ({"memory_type": "core"}, "task reward"),
    ({"memory_type": "episodic", "task_reward": 1.0, "expert_length": 0}, "expert length"),
])
def test_length_penalised_missing_inputs_are_counted_failures(info, needle):
    out = call_reward(length_score, "m", "text", None, info)
    assert out.failed and out.score == 0.0 and needle in out.error and "compute_score" in out.error


# ---------------------------------------------------------------- attribution (ADRPO)

COUNTS = [{"episodic": 2, "core": 5}, {"semantic": 1}, {"episodic": 1}, {}]


def test_the_dominant_type_gets_alpha_and_core_is_not_boosted_by_default():
    out = attribution_weights(COUNTS)
    assert out.totals == {"episodic": 3, "core": 5, "semantic": 1}
    assert out.dominant == "episodic"  # core has the most, but is never boosted by default
    assert out.weights == [4.0, 1.0, 4.0, 1.0]  # samples whose episodic items served answers


def test_boost_core_makes_core_eligible():
    out = attribution_weights(COUNTS, boost_core=True)
    assert out.dominant == "core" and out.weights == [4.0, 1.0, 1.0, 1.0]


def test_sample_types_decide_membership_and_alpha_is_configurable():
    out = attribution_weights(COUNTS, sample_types=["core", "episodic", "semantic", "episodic"], alpha=2.5)
    assert out.weights == [1.0, 2.5, 1.0, 2.5]


def test_a_tie_boosts_nobody():
    out = attribution_weights([{"episodic": 2}, {"semantic": 2}, {"core": 1}])
    assert out.dominant is None and out.weights == [1.0, 1.0, 1.0]
    assert out.totals == {"episodic": 2, "semantic": 2, "core": 1}
    # a tie with core does not matter when core is not eligible
    assert dominant_type({"core": 3, "episodic": 3, "semantic": 1}) == "episodic"
    assert dominant_type({"core": 3, "episodic": 3}, boost_core=True) is None


def test_no_counts_means_all_weights_one():
    assert attribution_weights([{}, {}]).weights == [1.0, 1.0]
    assert attribution_weights([{"episodic": 0}]).weights == [1.0]
    only_core = attribution_weights([{"core": 4}, {}])
    assert only_core.weights == [1.0, 1.0] and only_core.dominant is None
    empty = attribution_weights([])
    assert empty.weights == [] and empty.totals == {} and empty.dominant is None


def test_attribution_inputs_are_checked():
    with pytest.raises(ValueError, match="integer"):
        attribution_weights([{"episodic": -1}])
    with pytest.raises(ValueError, match="sample types"):
        attribution_weights([{}], sample_types=["core", "episodic"])


# ---------------------------------------------------------------- dense QA

def test_qa_task_reward_is_correct_over_total():
    assert qa_task_reward([True, True, False, True, False]) == pytest.approx(0.6)
    assert qa_task_reward(np.array([True, False])) == 0.5  # numpy bools from a Parquet extra_info
    out = call_reward(qa_score, "membuilder", "", None, {"judgements": [True, False, False, False]})
    assert out.score == 0.25 and out.extras == {"correct": 1, "total": 4}


@pytest.mark.parametrize("judgements,needle", [([], "no judged questions"), ([True, None], "positions [1]"),
                                               ("yes", "list of bools")])
def test_qa_task_reward_refuses_undefined_input(judgements, needle):
    with pytest.raises(ValueError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        qa_task_reward(judgements)


def test_qa_compute_score_without_judgements_is_a_counted_failure():
    out = call_reward(qa_score, "membuilder", "", None, {})
    assert out.failed and "judgements" in out.error


@pytest.mark.parametrize("n,expected", [
    (5, {"single-session": 3, "multi-session": 1, "temporal": 1}),  # 2.5/1.5/1.0: tie on .5 -> the earlier type
    (1, {"single-session": 1, "multi-session": 0, "temporal": 0}),
    (10, {"single-session": 5, "multi-session": 3, "temporal": 2}),
    (0, {"single-session": 0, "multi-session": 0, "temporal": 0}),
    (7, {"single-session": 4, "multi-session": 2, "temporal": 1}),  # 3.5/2.1/1.4 -> +1 single
])
def test_qa_mix_counts(n, expected):
    assert qa_mix(n) == expected


def test_qa_mix_always_sums_to_n():
    assert all(sum(qa_mix(n).values()) == n for n in range(60))
    assert qa_mix(4, (("a", 1), ("b", 1), ("c", 1))) == {"a": 2, "b": 1, "c": 1}


# ---------------------------------------------------------------- call_reward

def test_call_reward_normalises_return_values():
    def number(*_):
        return 0.75

    def flag(*_):
        return True

    def count(*_):
        return 2

    def with_extras(*_):
        return {"score": 0.5, "acc": True, "pred": "paris"}

    assert call_reward(number, "d", "s", "g", None) == RewardResult(0.75)
    assert call_reward(flag, "d", "s", "g", None) == RewardResult(1.0)
    assert call_reward(count, "d", "s", "g", None) == RewardResult(2.0)
    assert call_reward(with_extras, "d", "s", "g", None) == RewardResult(0.5, {"acc": True, "pred": "paris"})


@pytest.mark.parametrize("value,needle", [
    (float("nan"), "not finite"),
    (float("-inf"), "not finite"),
    ("0.9", "not a number"),
    (None, "not a number"),
    ({"value": 1}, "without 'score'"),
    ({"score": "high", "note": 1}, "not a number"),
    (10**400, "too large"),
])
def test_call_reward_turns_bad_values_into_counted_failures(value, needle):
    def bad_reward(*_):
        return value

    out = call_reward(bad_reward, "d", "s", "g", None)
    assert out.failed and out.score == 0.0
    assert needle in out.error and "bad_reward" in out.error


def test_call_reward_catches_exceptions_and_names_the_function():
    def broken_reward(data_source, solution_str, ground_truth, extra_info=None):
        raise KeyError("answer")

    out = call_reward(broken_reward, "d", "s", "g")
    assert out.failed and out.score == 0.0 and "broken_reward" in out.error and "KeyError" in out.error


def test_call_reward_awaits_async_functions_with_and_without_a_running_loop():
    async def async_reward(data_source, solution_str, ground_truth, extra_info=None):
        await asyncio.sleep(0)
        return {"score": len(solution_str) / 10, "source": data_source}

    assert call_reward(async_reward, "d", "abcd", None) == RewardResult(0.4, {"source": "d"})

    async def inside_a_loop():
        return call_reward(async_reward, "e", "ab", None)

    assert asyncio.run(inside_a_loop()) == RewardResult(0.2, {"source": "e"})

    async def async_broken(*_):
        raise RuntimeError("judge offline")

    out = call_reward(async_broken, "d", "s", "g")
    assert out.failed and "judge offline" in out.error


def test_summarize_counts_failures():
    results = [RewardResult(1.0), RewardResult(0.0, {}, "f: boom"), RewardResult(0.5, {"clipped": 2})]
    assert summarize(results) == {"n": 3, "n_failed": 1, "mean_score": 0.5, "mean_score_ok": 0.75, "n_clipped": 2}
    assert summarize([])["mean_score"] is None


# ---------------------------------------------------------------- registry and custom rewards

CUSTOM = textwrap.dedent('''
    import asyncio
    from dataclasses import dataclass


    @dataclass
    class Verdict:  # needs the module registered while it is executed
        score: float


    def compute_score(data_source, solution_str, ground_truth, extra_info=None):
        return Verdict(1.0 if solution_str.strip() == ground_truth else 0.0).score


    async def async_score(data_source, solution_str, ground_truth, extra_info=None):
        await asyncio.sleep(0)
        return {"score": 0.25, "length": len(solution_str)}


    def raising(data_source, solution_str, ground_truth, extra_info=None):
        raise RuntimeError("no judge")


    def nan_score(data_source, solution_str, ground_truth, extra_info=None):
        return float("nan")


    def extras(data_source, solution_str, ground_truth, extra_info=None):
        return {"score": 0.5, "acc": True, "pred": solution_str, "step": (extra_info or {}).get("step")}


    NOT_A_FUNCTION = 3
''')


@pytest.fixture()
def custom_file(tmp_path):
    path = tmp_path / "my_reward.py"
    path.write_text(CUSTOM, encoding="utf-8")
    return path


def test_custom_reward_sync_and_default_name(custom_file):
    fn = load_custom_reward(str(custom_file))  # no ":function": verl's default compute_score
    assert fn.__name__ == "compute_score"
    assert call_reward(fn, "d", " paris ", "paris") == RewardResult(1.0)
    assert call_reward(fn, "d", "rome", "paris") == RewardResult(0.0)


def test_custom_reward_async_raising_nan_and_extras(custom_file):
    def load(name):
        return load_custom_reward(f"{custom_file}:{name}")

    assert call_reward(load("async_score"), "d", "abc", None) == RewardResult(0.25, {"length": 3})
    raised = call_reward(load("raising"), "d", "abc", None)
    assert raised.failed and "raising" in raised.error and "no judge" in raised.error
    nan = call_reward(load("nan_score"), "d", "abc", None)
    assert nan.failed and "nan_score" in nan.error and nan.score == 0.0
    assert call_reward(load("extras"), "d", "abc", None, {"step": 7}) == RewardResult(
        0.5, {"acc": True, "pred": "abc", "step": 7})


def test_custom_reward_errors_name_the_file_and_the_function(custom_file, tmp_path):
    missing = tmp_path / "nowhere.py"
    with pytest.raises(RewardLoadError, match="no such file") as err:
        load_custom_reward(f"{missing}:score")
    assert str(missing) in str(err.value) and "'score'" in str(err.value)
    with pytest.raises(RewardLoadError, match="has no 'grade'") as err:
        load_custom_reward(f"{custom_file}:grade")
    assert str(custom_file) in str(err.value) and "compute_score" in str(err.value)
    with pytest.raises(RewardLoadError, match="not callable") as err:
        load_custom_reward(f"{custom_file}:NOT_A_FUNCTION")
    assert str(custom_file) in str(err.value) and "NOT_A_FUNCTION" in str(err.value)
    broken = tmp_path / "broken.py"
    broken.write_text("def compute_score(:\n", encoding="utf-8")
    with pytest.raises(RewardLoadError, match="importing the file failed") as err:
        load_custom_reward(str(broken))
    assert str(broken) in str(err.value)


def test_registry_lists_the_rewards_and_loads_them(custom_file):
    assert REWARDS.names() == ["dense-qa", "length-penalty", "persona-judge", "dualmem-roleplay", "membuilder-qa",
                               "keyword-count", "custom"]
    assert REWARDS.names(needs_judge=True) == ["persona-judge", "dualmem-roleplay", "membuilder-qa"]
    assert REWARDS.names(needs_judge=True, engine_optional=False) == ["persona-judge", "dualmem-roleplay"]
    assert REWARDS.load("dense-qa") is qa_score and REWARDS.load("length-penalty") is length_score
    fn = REWARDS.load("custom")(f"{custom_file}:compute_score")
    assert call_reward(fn, "d", "x", "x").score == 1.0
    with pytest.raises(ValueError, match="choose one of"):
        REWARDS.check("bleu")


def test_register_reward_adds_an_entry_and_refuses_duplicates():
    def exact(data_source, solution_str, ground_truth, extra_info=None):
        return solution_str == ground_truth

    register_reward(RewardSpec("exact-match-test", exact, "exact string match", needs_judge=False))
    try:
        assert call_reward(REWARDS.load("exact-match-test"), "d", "a", "a").score == 1.0
        with pytest.raises(ValueError, match="already registered"):
            register_reward(RewardSpec("exact-match-test", exact, "again", needs_judge=False))
    finally:
        REWARDS.unregister("exact-match-test")
