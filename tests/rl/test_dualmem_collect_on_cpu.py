"""The dualmem trajectory collector without Ray: trajectories advance in lockstep (one
sampling call per chunk round), each chunk step is a sample carrying its trajectory's reward
and advantage (hand-computed), rewards come through the real `dualmem-roleplay` reward
scorer, the step is padded to the update's fixed size with rows that change no gradient,
and bad data or configs fail with the file, history and key named."""

from __future__ import annotations

import json
import math
import threading

import pytest

from mnemoray.config import load_config
from mnemoray.config.base import ConfigError
from mnemoray.config.grpo import GRPOConfig
from mnemoray.loaders.errors import DatasetError
from mnemoray.records import EvalSample, EvidenceQuery, History, Persona, Session, Turn
from mnemoray.rewards.items import RewardItem, RewardScorer
from mnemoray.rewards.roleplay import from_reward_item
from mnemoray.rl.collect import StepBatch, padded
from mnemoray.rl.environments.dualmem_collect import DualmemCollector, clip_history, trajectory_source
from mnemoray.rl.lockstep import Lockstep
from mnemoray.rl.sequences import Rollout
from repo_paths import REPO

LINES = ["I grew up in Porto.", "Lovely city.", "I play the cello every evening.", "Nice.",
         "My sister Rita is a pilot.", "Wow."]
CONFIG = REPO / "configs/train/grpo_dualmem_local.yaml"


def history(hid: str = "h1", sessions: tuple[list[str], ...] = (LINES,)) -> History:
    return History(id=hid, dataset="test", persona=Persona(id="ana", name="Ana", description="A calm musician."),
                   sessions=[Session(id=f"{hid}:S{j}", timestamp="2023-06-01",
                                     turns=[Turn(id=f"{hid}:S{j}#{i}", speaker="Ana" if i % 2 == 0 else "Bot",
                                                 text=t, index=i) for i, t in enumerate(lines)])
                             for j, lines in enumerate(sessions)])


def sample(hid: str = "h1", queries: tuple[str, ...] = ("Where did you grow up?", "What do you play?"),
           visible: int | None = None, sessions: tuple[list[str], ...] = (LINES,)) -> EvalSample:
    return EvalSample(history=history(hid, sessions), queries=[
        EvidenceQuery(id=f"{hid}:q{i}", history_id=hid, text=q, gold_ids=[], gold_level="session",
                      visible_sessions=visible) for i, q in enumerate(queries)])


def cfg(*overrides: str) -> GRPOConfig:
    return load_config(GRPOConfig, CONFIG, ["rollout.n=2", "rollout.prompts_per_step=1",
                                            "environment.trajectories.chunk_turns=2",
                                            "environment.trajectories.max_chunks=4",
                                            "environment.trajectories.k=3", *overrides])


def writer_text(messages) -> str:
    """Turns the chunk's first line into a fact."""
    chunk = messages[-1]["content"].split("Dialogue chunk:\n")[1]
    return json.dumps({"facts": [f"Ana said: {chunk.splitlines()[0].split(': ', 1)[1]}"], "insights": []})


class Generate:
    """The rollout engines' contract: trajectory 0 writes a fact per chunk, trajectory 1 nothing."""

    def __init__(self):
        self.calls: list[list[str]] = []
        self.prompts: dict[str, str] = {}

    def __call__(self, inputs, settings, seed):
        assert settings.n == 1  # each trajectory's prompt is its own: one sample each
        self.calls.append([p.id for p in inputs])
        out = []
        for p in inputs:
            self.prompts[p.id] = p.messages[-1]["content"]
            text = writer_text(p.messages) if "#0." in p.id else '{"facts": [], "insights": []}'
            out.append(Rollout(p.id, 0, (1, 2, 3), (4, 5), text, True))
        return out


def judge_script(request):
    """Responder: quotes its notes; judge: factual_use 1 when the reply names Porto."""
    if request.metadata.get("call") == "respond":
        notes = request.messages[-1].content.split("most relevant first):\n")[1].split("\n\nSomeone")[0]
        return {"response": f"As Ana: {notes}"}
    used = "Porto" in request.messages[-1].content.split("Reply to judge:")[1]
    return {"reason": "ok", "factual_use": 1.0 if used else 0.0, "logic_persona_fit": 0.5, "value_safety": 1.0}


def pool_score(engine):
    scorer = RewardScorer("dualmem-roleplay", engine=engine, judge_retries=0)
    return lambda items: {it.id: r for it, r in zip(items, scorer.score(items), strict=True)}


def test_chunk_steps_carry_their_trajectory_reward_and_advantage(embedder, scripted_engine):
    c = cfg()
    src = trajectory_source(sample(), 2, 4, 2, REPO)
    collector = DualmemCollector(c, [src], embedder)
    generate, engine = Generate(), scripted_engine(judge_script)
    batch = collector.collect(1, generate, pool_score(engine))
    # 3 chunk rounds, each one call holding both trajectories' prompts (lockstep), in trajectory order
    assert generate.calls == [[f"0:h1#0.{r}", f"0:h1#1.{r}"] for r in range(3)]
    assert "F1: Ana said: I grew up in Porto." in generate.prompts["0:h1#0.1"]
    assert "(none yet)" in generate.prompts["0:h1#1.1"].split("Dialogue")[0]  # its own memory, not the other's
    # rewards: 0.3 + 0.6 x 0.5 + 0.1 = 0.7 with Porto in memory, 0.4 without; A = ±0.15 / (0.3 / sqrt 2)
    a = 0.15 / (0.3 / math.sqrt(2))
    assert [r.prompt_id for r in batch.rollouts] == [f"0:h1#{t}.{s}" for t in (0, 1) for s in range(3)]
    assert batch.advantages == pytest.approx([a] * 3 + [-a] * 3, rel=1e-4)
    assert batch.weights == [1.0] * 6 and (batch.groups, batch.zero_std_groups) == (1, 0)
    r = batch.record
    assert r["reward_mean"] == pytest.approx(0.55) and r["reward_std"] == pytest.approx(0.15)
    assert r["reward_failed"] == 0 and r["trajectory/queries"] == 4 and r["trajectory/steps_mean"] == 3
    assert r["reward/factual_use"] == pytest.approx(0.5) and r["reward/format_failed"] == 0
    assert r["trajectory/memory_items_mean"] == pytest.approx(1.5)
    assert engine.batches == [["respond"] * 4, ["persona_judge"] * 4]  # one reply batch, one verdict batch
    # Dr.GRPO scale: r - mean, copied the same way
    flat = DualmemCollector(cfg("algorithm.advantage_scale=none"), [src], embedder)
    assert flat.collect(1, Generate(), pool_score(scripted_engine(judge_script))).advantages == pytest.approx(
        [0.15] * 3 + [-0.15] * 3)


def test_failed_verdicts_count_and_score_zero(embedder, scripted_engine):
    collector = DualmemCollector(cfg(), [trajectory_source(sample(), 2, 4, 2, REPO)], embedder)
    batch = collector.collect(1, Generate(), pool_score(scripted_engine(
        lambda request: {"response": "hi"} if request.metadata.get("call") == "respond" else "no verdict")))
    assert batch.record["reward_failed"] == 4 and batch.record["reward_mean"] == 0.0
    assert batch.advantages == [0.0] * 6 and batch.zero_std_groups == 1


def test_padding_fills_the_update_without_changing_its_gradient(tiny_model):
    import torch
    from transformers import AutoModelForCausalLM

    from mnemoray.rl.losses import GRPOLossConfig, grpo_loss
    from mnemoray.rl.sequences import token_logprobs
    from mnemoray.rl.update import worker_batch

    real = [Rollout("a", 0, (5, 6, 7), (8, 9), "", True), Rollout("b", 0, (5, 6), (10, 11, 12), "", False)]
    batch = StepBatch(real, [1.0, -0.5], [1.0, 1.0])
    rollouts, adv, weights = padded(batch, 4, 0)
    assert len(rollouts) == 4 and adv == [1.0, -0.5, 0.0, 0.0] and weights == [1.0, 1.0, 0.0, 0.0]
    assert rollouts[2].response_ids == () and rollouts[3].prompt_ids == (0, 0)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model))

    def grads(rs, a, w):
        model.zero_grad()
        b = worker_batch(rs, a, w, 0)
        logp, logits = token_logprobs(model, b, with_logits=True)
        grpo_loss(logp, logp.detach(), b.extras["advantages"], b.response_mask, GRPOLossConfig(),
                  weights=b.extras["weights"], logits=logits).loss.backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    for with_pads, without in zip(grads(rollouts, adv, weights), grads(real, [1.0, -0.5], [1.0, 1.0]), strict=True):
        assert torch.allclose(with_pads, without, atol=1e-6)
    with pytest.raises(ValueError, match="more than the 1 the update"):
        padded(batch, 1, 0)


def test_histories_are_cut_to_max_chunks_and_to_the_sessions_before_the_queries():
    h = history(sessions=(LINES[:5], ["", "a", "b", "c"], ["x", "y"]))
    cut = clip_history(h, chunk_turns=2, max_chunks=4)  # 5 turns = 3 chunks, then 1 chunk of the 3 spoken
    assert [[t.text for t in s.turns] for s in cut.sessions] == [LINES[:5], ["a", "b"]]
    assert [len(s.turns) for s in clip_history(h, 2, 9, visible_sessions=1).sessions] == [5]
    src = trajectory_source(sample(visible=1, sessions=(LINES, ["later"])), 2, 9, 1, REPO)
    assert [s.id for s in src.history.sessions] == ["h1:S0"] and [q.text for q in src.queries] == [
        "Where did you grow up?"]


def test_bad_sources_and_configs_are_named(tmp_path):
    with pytest.raises(DatasetError, match=r"history h1.*queries.*no queries"):
        trajectory_source(sample(queries=()), 2, 4, 2, tmp_path / "data.json")
    with pytest.raises(DatasetError, match=r"history h1.*no dialogue turns before its first query"):
        trajectory_source(sample(visible=0), 2, 4, 2, tmp_path / "data.json")
    with pytest.raises(ConfigError, match=r"environment 'prompts' has no multi-step trajectories.*'dualmem'"):
        cfg("environment.name=prompts")
    with pytest.raises(ConfigError, match="dynamic_sampling is not supported with environment.trajectories"):
        cfg("algorithm.dynamic_sampling=true")
    with pytest.raises(ConfigError, match="unknown dataset 'nope'"):
        cfg("environment.trajectories.dataset=nope")
    c = cfg("environment.trajectories.max_chunks=3")
    assert c.samples_per_step == 6 and c.micro_batches == 1  # 1 history x 2 trajectories x 3 steps
    with pytest.raises(ValueError, match=r"reward item x: extra_info\['query'\]"):
        from_reward_item(RewardItem("x", "dualmem", "", None, {"retrieved": []}))


def test_lockstep_batches_in_episode_order_and_stops_all_on_a_sampler_error():
    seen: list[list[int]] = []

    def sample(round_, batch):
        seen.append([i for i, _ in batch])
        return [f"{i}:{round_}" for i, _ in batch]

    def episode(turns):
        return lambda policy: [policy([{"role": "user", "content": str(t)}]) for t in range(turns)]

    assert Lockstep(sample, text=str).run([episode(2), episode(3), episode(1)]) == [
        ["0:0", "0:1"], ["1:0", "1:1", "1:2"], ["2:0"]]
    assert seen == [[0, 1, 2], [0, 1], [1]]  # finished episodes drop out of later rounds
    active = threading.active_count()

    def broken(round_, batch):
        raise RuntimeError("engine down")

    with pytest.raises(RuntimeError, match="engine down"):
        Lockstep(broken, text=str).run([episode(2), episode(2)])
    assert threading.active_count() == active  # no episode thread left waiting
