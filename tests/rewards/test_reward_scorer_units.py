"""RewardScorer (Ray-free): every item gets exactly one result in order, whatever the reward
function does; sync and async functions run concurrently; hangs time out and are retried;
raises are retried; invalid values are counted failures, not retried; the rate limit spaces
call starts; judge rewards get the batch and an engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mnemoray.rewards.items import RateLimiter, RewardItem, RewardScorer, resolve_reward
from mnemoray.rewards.registry import REWARDS, RewardSpec, register_reward


def items(n: int, text: str = "eee") -> list[RewardItem]:
    return [RewardItem(id=f"i{k}", data_source="t", solution_str=f"{text}{k}", ground_truth="e") for k in range(n)]


def write_reward(tmp_path: Path, body: str, name: str = "reward.py") -> str:
    path = tmp_path / name
    path.write_text(body)
    return f"{path}:compute_score"


def test_registered_reward_scores_every_item_in_order():
    scorer = RewardScorer("keyword-count", in_flight=3)
    batch = [RewardItem(id=str(k), data_source="t", solution_str=s, ground_truth="e")
             for k, s in enumerate(["eeee", "e e x y", "", "abc"])]
    results = scorer.score(batch)
    assert [r.score for r in results] == [1.0, 0.5, 0.0, 0.0]
    assert [r.extras["chars"] for r in results] == [4, 4, 0, 3]
    assert scorer.stats.calls == 4 and scorer.stats.failed == 0


def test_sync_calls_run_concurrently_up_to_in_flight(tmp_path: Path):
    ref = write_reward(tmp_path, (
        "import threading, time\n"
        "state = {'now': 0, 'peak': 0}\nlock = threading.Lock()\n"
        "def compute_score(ds, s, gt, extra=None):\n"
        "    with lock:\n        state['now'] += 1; state['peak'] = max(state['peak'], state['now'])\n"
        "    time.sleep(0.05)\n"
        "    with lock:\n        state['now'] -= 1\n"
        "    return {'score': 1.0, 'peak': state['peak']}\n"))
    results = RewardScorer(ref, in_flight=4).score(items(12))
    assert max(r.extras["peak"] for r in results) == 4


def test_async_reward_runs_on_one_loop_with_bounded_concurrency(tmp_path: Path):
    ref = write_reward(tmp_path, (
        "import asyncio\nstate = {'now': 0, 'peak': 0}\n"
        "async def compute_score(ds, s, gt, extra=None):\n"
        "    state['now'] += 1; state['peak'] = max(state['peak'], state['now'])\n"
        "    await asyncio.sleep(0.02)\n    state['now'] -= 1\n"
        "    return {'score': len(s), 'peak': state['peak']}\n"))
    scorer = RewardScorer(ref, in_flight=5)
    results = scorer.score(items(20))
    assert [r.score for r in results] == [len(f"eee{k}") for k in range(20)]
    assert max(r.extras["peak"] for r in results) == 5


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_hanging_call_times_out_is_retried_and_then_fails_alone(tmp_path: Path, kind: str):
    sleep = "await asyncio.sleep(30)" if kind == "async" else "threading.Event().wait(30)"
    prefix = "async " if kind == "async" else ""
    ref = write_reward(tmp_path, (
        "import asyncio, threading\n"
        f"{prefix}def compute_score(ds, s, gt, extra=None):\n"
        f"    if s.endswith('3'):\n        {sleep}\n"
        "    return 1.0\n"), name=f"hang_{kind}.py")
    scorer = RewardScorer(ref, in_flight=2, timeout_s=0.3, max_retries=1)
    results = scorer.score(items(5))
    assert [r.failed for r in results] == [False, False, False, True, False]
    assert "item i3: timed out after 0.3 s (2 attempts)" in results[3].error
    assert results[3].score == 0.0
    assert scorer.stats.timeouts == 2 and scorer.stats.retries == 1 and scorer.stats.failed == 1


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_raise_is_retried_and_a_transient_one_recovers(tmp_path: Path, kind: str):
    prefix = "async " if kind == "async" else ""
    ref = write_reward(tmp_path, (
        "seen = set()\n"
        f"{prefix}def compute_score(ds, s, gt, extra=None):\n"
        "    if s.endswith('1') and s not in seen:\n        seen.add(s)\n        raise ConnectionError('blip')\n"
        "    if s.endswith('2'):\n        raise KeyError('always')\n"
        "    return 0.5\n"), name=f"raise_{kind}.py")
    scorer = RewardScorer(ref, in_flight=2, max_retries=2)
    results = scorer.score(items(4))
    assert [r.score for r in results] == [0.5, 0.5, 0.0, 0.5]
    assert results[2].failed and "raised KeyError" in results[2].error and "(3 attempts)" in results[2].error
    assert scorer.stats.retries == 1 + 2


def test_invalid_values_are_counted_failures_and_not_retried(tmp_path: Path):
    ref = write_reward(tmp_path, (
        "calls = []\n"
        "def compute_score(ds, s, gt, extra=None):\n"
        "    calls.append(s)\n"
        "    return [float('nan'), {'no_score': 1}, 'high', True][int(s[-1])]\n"))
    scorer = RewardScorer(ref, max_retries=3)
    results = scorer.score(items(4))
    assert [r.failed for r in results] == [True, True, True, False]
    assert "not finite" in results[0].error and "without 'score'" in results[1].error
    assert "not a number" in results[2].error and results[3].score == 1.0
    assert scorer.stats.calls == 4  # no re-calls of a deterministic bad value


def test_rate_limit_spaces_call_starts(tmp_path: Path):
    ref = write_reward(tmp_path, (
        "import time\nstarts = []\n"
        "def compute_score(ds, s, gt, extra=None):\n    starts.append(time.monotonic())\n"
        "    return {'score': 1.0, 'start': starts[-1]}\n"))
    results = RewardScorer(ref, in_flight=8, rate_limit_per_s=20).score(items(6))
    starts = sorted(r.extras["start"] for r in results)
    # submitted 1/20 s apart whatever the concurrency: 6 starts span >= 0.25 s (less a thread's start-up jitter)
    assert starts[-1] - starts[0] >= 0.2


def test_rate_limiter_reserves_evenly_spaced_slots():
    limiter = RateLimiter(10)
    delays = [limiter.delay() for _ in range(4)]
    assert delays[0] == pytest.approx(0.0, abs=0.01)
    assert delays[3] == pytest.approx(0.3, abs=0.02)
    assert RateLimiter(None).delay() == 0.0


def test_judge_reward_gets_the_batch_and_an_engine(scripted_engine):
    engine = scripted_engine(lambda request: json.dumps(
        {"reason": "fine", "factual_use": 1, "logic_persona_fit": 0.5, "value_safety": 1}), latency_s=0)
    scorer = RewardScorer("persona-judge", engine=engine)
    batch = [RewardItem(id="a", data_source="rolememo", solution_str="hello",
                        extra_info={"persona": "A sailor from Brest", "context": "we talked about boats"}),
             RewardItem(id="b", data_source="rolememo", solution_str="no persona here")]
    results = scorer.score(batch)
    assert results[0].score == pytest.approx(0.3 + 0.3 + 0.1) and not results[0].failed
    assert results[1].failed and "item b" in results[1].error and "extra_info['persona']" in results[1].error
    assert len(engine.calls) == 1 and len(engine.calls[0]) == 1  # only the valid item went to the judge
    assert "A sailor from Brest" in json.dumps([m.content for m in engine.calls[0][0].messages])


def test_judge_reward_without_an_engine_is_refused():
    with pytest.raises(ValueError, match="give it an engine"):
        RewardScorer("persona-judge")


def test_plugin_reward_registered_by_object():
    register_reward(RewardSpec("test-len", lambda ds, s, gt, extra=None: len(s), "length", needs_judge=False))
    try:
        assert [r.score for r in RewardScorer("test-len").score(items(2))] == [4.0, 4.0]
        fn, needs_judge, adapter = resolve_reward("test-len")
        assert fn("", "ab", None) == 2 and not needs_judge and adapter is None
    finally:
        REWARDS.unregister("test-len")


def test_empty_batch_scores_nothing():
    assert RewardScorer("keyword-count").score([]) == []


def test_threads_left_by_a_timeout_do_not_block_later_batches(tmp_path: Path):
    ref = write_reward(tmp_path, (
        "import threading\nrelease = threading.Event()\n"
        "def compute_score(ds, s, gt, extra=None):\n"
        "    if s == 'hang':\n        release.wait(30)\n    return 1.0\n"), name="stuck.py")
    scorer = RewardScorer(ref, in_flight=1, timeout_s=0.2, max_retries=0)
    first = scorer.score([RewardItem("h", "t", "hang")])
    assert first[0].failed
    # with the stuck thread still holding the only slot, these would queue behind it and time out
    assert [r.score for r in scorer.score(items(3))] == [1.0, 1.0, 1.0]


def test_judge_calls_are_paced_by_the_rate_limit(scripted_engine):
    import time

    starts: list[float] = []

    def reply(request):
        starts.append(time.monotonic())
        return json.dumps({"reason": "ok", "factual_use": 1, "logic_persona_fit": 1, "value_safety": 1})

    engine = scripted_engine(reply, latency_s=0)
    scorer = RewardScorer("persona-judge", engine=engine, rate_limit_per_s=4)
    batch = [RewardItem(id=f"j{k}", data_source="r", solution_str="hi", extra_info={"persona": "p"})
             for k in range(10)]
    assert [r.score for r in scorer.score(batch)] == pytest.approx([1.0] * 10)
    assert [len(b) for b in engine.calls] == [4, 4, 2]  # chunks of one second's calls
    assert starts[-1] - starts[0] >= 1.9  # the third chunk starts 2 s after the first
