"""The "dualmem" environment: recurrent chunk steps (MemAgent-style) on the real DualMem
framework and real embeddings, the policy and the judges scripted: each step's prompt holds
the memory the same trajectory wrote so far, the trajectory's persona-judged role-play reward
and its group advantage are copied to every step, and a dualmem build log loads as one prompt
per chunk step."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest

from mnemoray.config import MemoryConfig
from mnemoray.loaders.errors import DatasetError
from mnemoray.memory.dualmem import DualMemMemory
from mnemoray.memory.trajectory import write_jsonl
from mnemoray.records import History, Persona, Session, Turn
from mnemoray.rl.environments import ENVIRONMENTS
from mnemoray.rl.environments.dualmem import RoleplayQuery, judge_trajectories, run_trajectory, step_samples

CONFIG = MemoryConfig(name="dualmem", dualmem={"chunk_turns": 2})
LINES = ["I grew up in Porto.", "Lovely city.", "I play the cello every evening.", "Nice.",
         "My sister Rita is a pilot.", "Wow."]


def history(hid: str = "h1") -> History:
    turns = [Turn(id=f"{hid}:S1#{i}", speaker="Ana" if i % 2 == 0 else "Bot", text=t, index=i)
             for i, t in enumerate(LINES)]
    return History(id=hid, dataset="test", persona=Persona(id="ana", name="Ana", description="A calm musician."),
                   sessions=[Session(id=f"{hid}:S1", timestamp="2023-06-01", turns=turns)])


def chunk_of(messages) -> str:
    return messages[-1]["content"].split("Dialogue chunk:\n")[1]


def writer(messages) -> str:
    """A policy that turns the first line of the chunk into a fact."""
    line = chunk_of(messages).splitlines()[0].split(": ", 1)[1]
    return json.dumps({"facts": [f"Ana said: {line}"], "insights": []})


def test_each_step_reads_the_memory_its_trajectory_wrote(embedder):
    t = run_trajectory(history(), writer, CONFIG, embedder)
    assert [s.index for s in t.steps] == [0, 1, 2] and all(s.format_ok for s in t.steps)
    prompts = [s.messages[-1]["content"] for s in t.steps]
    assert "Facts already in memory:\n(none yet)" in prompts[0]
    assert "F1: Ana said: I grew up in Porto." in prompts[1] and "cello" not in prompts[1].split("Dialogue")[0]
    assert "F2: Ana said: I play the cello every evening." in prompts[2]
    assert "A calm musician." in prompts[0] and "My sister Rita" in chunk_of(t.steps[2].messages)
    assert sorted(it.text for it in t.memory.memory_items()) == [
        "Ana said: I grew up in Porto.", "Ana said: I play the cello every evening.",
        "Ana said: My sister Rita is a pilot."]


def test_a_bad_completion_is_a_step_that_changes_nothing(embedder):
    answers = iter(["not json", writer, "{\"facts\": 3}"])

    def policy(messages):
        answer = next(answers)
        return answer(messages) if callable(answer) else answer

    t = run_trajectory(history(), policy, CONFIG, embedder)
    assert [s.format_ok for s in t.steps] == [False, True, False]  # unparsable, then off-schema
    assert [it.text for it in t.memory.memory_items()] == ["Ana said: I play the cello every evening."]
    assert t.steps[0].completion == "not json"


def judged(trajectories, scripted_engine, judge_script):
    def respond(request):
        notes = request.messages[-1].content.split("most relevant first):\n")[1].split("\n\nSomeone")[0]
        return {"response": f"As Ana: {notes}"}

    queries = {"h1": [RoleplayQuery("q1", "Where did you grow up?"), RoleplayQuery("q2", "What do you play?")]}
    responder, judge = scripted_engine(respond), scripted_engine(judge_script)
    judge_trajectories(trajectories, queries, responder, judge, k=3, judge_retries=0)
    return responder, judge


def test_the_trajectory_reward_is_copied_to_every_step(scripted_engine, embedder):
    good = run_trajectory(history(), writer, CONFIG, embedder, index=0)
    empty = run_trajectory(history(), lambda m: '{"facts": [], "insights": []}', CONFIG, embedder, index=1)

    def judge(request):
        used = "Porto" in request.messages[-1].content.split("Reply to judge:")[1]
        return {"reason": "ok", "factual_use": 1.0 if used else 0.0, "logic_persona_fit": 0.5, "value_safety": 1.0}

    responder, judge_engine = judged([good, empty], scripted_engine, judge)
    assert len(responder.seen) == 4 and len(judge_engine.seen) == 4  # 2 queries x 2 trajectories, one batch each
    # good: both replies quote the recalled notes (Porto among them): 0.3 + 0.6 x 0.5 + 0.1 = 0.7; empty: 0.4
    assert good.reward.score == pytest.approx(0.7) and empty.reward.score == pytest.approx(0.4)
    assert good.reward.extras == {"queries": 2, "failed": 0, "steps": 3, "format_failures": 0}
    samples = step_samples([good, empty])
    assert len(samples) == 6 and [s.step for s in samples] == [0, 1, 2, 0, 1, 2]
    # A = (r - mean) / std over the 2 trajectories (unbiased std = 0.3 / sqrt 2), copied to each step
    expected = 0.15 / (0.3 / math.sqrt(2))
    assert [s.reward for s in samples] == pytest.approx([0.7] * 3 + [0.4] * 3)
    assert [s.advantage for s in samples] == pytest.approx([expected] * 3 + [-expected] * 3, rel=1e-4)
    assert samples[1].messages == good.steps[1].messages and samples[1].completion == good.steps[1].completion
    assert [s.advantage for s in step_samples([good, empty], scale="none")] == pytest.approx([0.15] * 3 + [-0.15] * 3)


def test_failed_verdicts_score_zero_and_are_counted(scripted_engine, embedder):
    t = run_trajectory(history(), writer, CONFIG, embedder)
    judged([t], scripted_engine, lambda request: "no verdict")
    assert t.reward.score == 0.0 and t.reward.extras["failed"] == 2
    assert all(r.failed and "no valid verdict" in r.error for r in t.judged)
    with pytest.raises(ValueError, match="no role-play queries"):
        judge_trajectories([t], {}, scripted_engine(lambda r: ""), scripted_engine(lambda r: ""))
    with pytest.raises(ValueError, match="without a reward"):
        step_samples([run_trajectory(history(), writer, CONFIG, embedder)])


def test_a_build_log_loads_as_one_prompt_per_chunk_step(tmp_path: Path, scripted, embedder):
    def script(call, request):
        return writer([m.model_dump() for m in request.messages]) if "cello" not in request.messages[-1].content \
            else "broken"

    memory = DualMemMemory(CONFIG, engine=scripted(script), embedder=embedder, max_retries=0)
    for hid in ("h1", "h2"):
        memory.log.history_id = hid
        memory.ingest(history(hid).sessions[0], history(hid).persona)
    write_jsonl(memory.log.entries, tmp_path / "trajectories.jsonl")
    counts: Counter = Counter()
    prompts, errors = ENVIRONMENTS.load("dualmem")(tmp_path, counts=counts)
    assert not errors and counts == Counter({"kept": 4, "skipped_failed": 2})
    assert [(p.extra_info["history_id"], p.extra_info["step"], p.extra_info["steps"]) for p in prompts] == [
        ("h1", 0, 2), ("h1", 1, 2), ("h2", 0, 2), ("h2", 1, 2)]
    assert all(p.extra_info["persona"].startswith("Ana") and p.data_source == "dualmem" for p in prompts)
    first = memory.log.entries[0]
    assert list(prompts[0].messages) == first["messages"] and json.loads(prompts[0].ground_truth) == first["parsed"]
    from typer.testing import CliRunner

    from mnemoray.cli.main import app
    from mnemoray.rl.environments import load_prompts

    out = tmp_path / "steps.jsonl"
    res = CliRunner().invoke(app, ["train", "grpo-data", "--environment", "dualmem", "--from", str(tmp_path),
                                   "--out", str(out)])
    assert res.exit_code == 0 and json.loads(res.output)["prompts"] == 4, res.output
    assert [p.extra_info["step"] for p in load_prompts(out)[0]] == [0, 1, 0, 1]
    (tmp_path / "bad.jsonl").write_text("{nope\n")
    with pytest.raises(DatasetError, match=r"bad.jsonl: record line 1: malformed JSON"):
        ENVIRONMENTS.load("dualmem")(tmp_path / "bad.jsonl")


def test_sampled_trajectories_give_a_trainable_batch_with_copied_advantages(tiny_model, scripted_engine, embedder):
    """The tiny model as the policy (real sampler, real update): each chunk step keeps its
    token ids, and one GRPO update runs on the steps with their trajectory's advantage."""
    import torch
    from transformers import AutoModelForCausalLM

    from mnemoray.rl.environments.dualmem import SamplerPolicy, step_batch
    from mnemoray.rl.losses import GRPOLossConfig
    from mnemoray.rl.rollout import HFSampler, SamplingSettings
    from mnemoray.rl.update import TorchEngine, UpdatePlan, policy_update, score

    sampler = HFSampler(str(tiny_model))
    trajectories = [run_trajectory(history(), SamplerPolicy(sampler, SamplingSettings(max_new_tokens=6), seed=10 * i),
                                   CONFIG, embedder, index=i) for i in range(2)]
    for t in trajectories:
        assert len(t.steps) == 3 and all(s.rollout is not None and s.rollout.text == s.completion for s in t.steps)
        assert not any(s.format_ok for s in t.steps)  # a random model writes no extraction: memory stays empty
    verdicts = iter([1.0, 1.0, 0.0, 0.0])  # trajectory 0's two replies, then trajectory 1's

    def judge(request):
        v = next(verdicts)
        return {"reason": "", "factual_use": v, "logic_persona_fit": v, "value_safety": v}

    judged(trajectories, scripted_engine, judge)
    assert [t.reward.score for t in trajectories] == pytest.approx([1.0, 0.0])
    samples = step_samples(trajectories)
    batch = step_batch(samples, sampler.tokenizer.pad_token_id)
    assert batch.extras["advantages"].tolist() == pytest.approx([0.7071] * 3 + [-0.7071] * 3, rel=1e-3)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model))
    before = [p.detach().clone() for p in model.parameters()]
    engine = TorchEngine(model, torch.optim.AdamW(model.parameters(), lr=1e-3), grad_accum=1)
    engine.eval()
    batch.extras["old_logp"] = score(engine, batch, 6)
    engine.train()
    metrics = policy_update(engine, batch, UpdatePlan(loss=GRPOLossConfig(), micro_batch_size=6), seed=0)
    assert math.isfinite(metrics["loss"]) and metrics["tokens"] == sum(len(s.rollout.response_ids) for s in samples)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    with pytest.raises(ValueError, match="without token ids"):
        step_batch(step_samples([judged_copy(trajectories[0])]), 0)


def judged_copy(t):
    """The trajectory with its steps' token ids dropped (as from a plain text policy)."""
    from dataclasses import replace

    return replace(t, steps=[replace(s, rollout=None) for s in t.steps])
