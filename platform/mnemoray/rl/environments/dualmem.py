"""The "dualmem" environment: DualMem memory built in recurrent chunks (as in MemAgent), judged in role-play.

A history is read in chunks (the framework's `chunk_turns`, default 12 turns per chunk);
each chunk is one step whose prompt holds the persona, the memory so far (facts and
insights written by the earlier steps of the SAME trajectory) and the chunk, and whose
completion is the step's extraction (`{"facts": [...], "insights": [...]}`). A trajectory
is all steps of one history; its reward comes at the end: a responder plays the persona
and answers role-play queries from the trajectory's final memory (top-k retrieval), and
the RoleMemo persona judge scores each reply in [0, 1] (`mnemoray.rewards.persona_judge`;
a reply or verdict that failed counts as 0 and is counted). The trajectory's reward, and
its group advantage over the n trajectories of the same history, are copied to every
chunk step, so each step is trained like a single-turn sample.

Two ways in:
- `load_dualmem(path)` (the registry loader; `train grpo-data --environment dualmem`):
  one prompt per chunk step of a dualmem `memory build` trajectory log, with the exact
  messages the expert model got (memory so far = the expert's) and its answer as ground
  truth: recurrent-chunk prompts for SFT, verl or your own reward.
- `run_trajectory` / `step_samples`: the online recurrence, the policy writing the memory
  it reads at the next step (plain Python: the policy is any `messages -> text` function;
  the memory code is the real `DualMemMemory`, so ops, dedup and insight refs are the
  framework's own). With a `SamplerPolicy` (a rollout sampler) each step keeps its token
  ids and `step_batch` gives the update its batch. In `train grpo` with
  `environment.trajectories`, `dualmem_collect.DualmemCollector` runs them for the Ray
  controller: all trajectories of a step in lockstep, rewards from the reward-actor pool.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError

from mnemoray.config import MemoryConfig
from mnemoray.eval.roleplay import RoleplaySettings
from mnemoray.llm.types import ChatRequest, ChatResult, Engine, Usage
from mnemoray.loaders.errors import DatasetError, from_validation_error
from mnemoray.memory.dualmem import DualMemMemory
from mnemoray.memory.trajectory import TrajectoryLog
from mnemoray.records import History, Persona
from mnemoray.rewards.roleplay import RoleplayItem, mean_reward, score_roleplay
from mnemoray.rewards.scoring import RewardResult
from mnemoray.rl.environments.membuilder import trajectory_file
from mnemoray.rl.environments.prompts import RLPrompt

if TYPE_CHECKING:  # torch stays unloaded until a sampler is used
    from mnemoray.rl.rollout import SamplingSettings
    from mnemoray.rl.sequences import Rollout

FRAMEWORK = "dualmem"
STEP_CALL = "dualmem/extract"

Policy = Callable[[list[dict[str, str]]], str]  # chat messages -> the completion text


# ---- offline: chunk-step prompts from a build log ----------------------------------------------

class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str
    content: str


class _Call(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str
    framework: str
    history_id: str
    session_id: str | None
    call: str
    messages: list[_Message]
    parsed: Any = None
    error: str | None = None
    memory_state: Any = None


def persona_of_prompt(user_message: str) -> str:
    """The persona block of a DualMem extract prompt ("Persona:" up to the "Session" line)."""
    _, marker, rest = user_message.partition("Persona:\n")
    if not marker:
        return ""
    persona, _, _ = rest.partition("\n\nSession ")
    return persona.strip()


def load_dualmem(path: str | Path, skip_invalid: bool = False,
                 counts: Counter | None = None) -> tuple[list[RLPrompt], list[DatasetError]]:
    """One prompt per chunk step (successful `dualmem/extract` call) of a build log, in log order.

    extra_info: history_id, session_id, step (0-based within the history), steps (the
    history's step count), group (the history: one trajectory), persona (the profile text
    the step was shown) and memory_state (the facts / insights it was shown).
    """
    file = trajectory_file(Path(path).expanduser())
    counts = counts if counts is not None else Counter()
    kept: list[_Call] = []
    errors: list[DatasetError] = []
    with open(file, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"line {lineno}"
            try:
                try:
                    raw = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DatasetError(file, where, None, f"malformed JSON ({err.msg})") from None
                try:
                    call = _Call.model_validate(raw)
                except ValidationError as err:
                    raise from_validation_error(file, where, err) from None
            except DatasetError as err:
                if not skip_invalid:
                    raise
                errors.append(err)
                continue
            if call.framework != FRAMEWORK or call.call != STEP_CALL:
                counts["skipped_other"] += 1
            elif call.error is not None or call.parsed is None:
                counts["skipped_failed"] += 1
            else:
                kept.append(call)
    steps = Counter(c.history_id for c in kept)
    seen: Counter = Counter()
    prompts = []
    for call in kept:
        user = next((m.content for m in reversed(call.messages) if m.role == "user"), "")
        info = {"history_id": call.history_id, "session_id": call.session_id, "step": seen[call.history_id],
                "steps": steps[call.history_id], "group": call.history_id, "persona": persona_of_prompt(user),
                "memory_state": call.memory_state}
        seen[call.history_id] += 1
        counts["kept"] += 1
        prompts.append(RLPrompt(call.id, tuple(m.model_dump() for m in call.messages), FRAMEWORK,
                                json.dumps(call.parsed, ensure_ascii=False, sort_keys=True), info))
    return prompts, errors


# ---- online: recurrent trajectories written by the policy --------------------------------------

class SamplerPolicy:
    """A rollout sampler (`mnemoray.rl.rollout_registry`: hf, ...) as a step policy, one sample per
    step; it keeps each step's `Rollout` (token ids) so the steps can be trained on."""

    def __init__(self, sampler: Any, settings: SamplingSettings, seed: int = 0):
        self.sampler, self.settings, self.seed = sampler, replace(settings, n=1), seed
        self.rollouts: list[Rollout] = []

    def __call__(self, messages: list[dict[str, str]]) -> str:
        from mnemoray.rl.rollout import PromptInput

        key = f"step{len(self.rollouts)}"
        (rollout,) = self.sampler.generate([PromptInput(key, tuple(messages))], self.settings,
                                           self.seed + len(self.rollouts))
        self.rollouts.append(rollout)
        return rollout.text


class PolicyEngine:
    """The engine contract around a policy function, so `DualMemMemory` runs its own chunk loop."""

    name = "policy"
    model = "policy"

    def __init__(self, policy: Policy):
        self.policy = policy

    def generate(self, requests: list[ChatRequest]) -> list[ChatResult]:
        return [ChatResult(id=r.id, text=self.policy([m.model_dump() for m in r.messages]), usage=Usage())
                for r in requests]


@dataclass
class Step:
    index: int
    session_id: str | None
    messages: list[dict[str, str]]  # the prompt: persona, memory so far, the chunk
    completion: str
    format_ok: bool  # the completion parsed as an extraction (else it changed nothing)
    rollout: Rollout | None = None  # token ids, when the policy is a SamplerPolicy


@dataclass
class Trajectory:
    sample_id: str  # the history: the n trajectories of one history form a GRPO group
    index: int
    steps: list[Step]
    memory: DualMemMemory
    persona: Persona | None = None
    reward: RewardResult | None = None
    judged: list[RewardResult] = field(default_factory=list)


def run_trajectory(history: History, policy: Policy, config: MemoryConfig | None = None, embedder: Any = None,
                   index: int = 0) -> Trajectory:
    """One pass over the history, chunk by chunk, the policy writing the memory it reads next.

    A completion that is not a valid extraction changes nothing (no re-ask: the policy's
    one answer is the step) and is kept with format_ok False.
    """
    config = config or MemoryConfig(name=FRAMEWORK)
    log = TrajectoryLog(FRAMEWORK, history.id)
    memory = DualMemMemory(config, engine=PolicyEngine(policy), embedder=embedder, log=log, max_retries=0)
    sampled = getattr(policy, "rollouts", None)
    start = len(sampled) if isinstance(sampled, list) else 0
    memory.ingest_many(history.sessions, history.persona)
    steps = [Step(i, e["session_id"], e["messages"], e["raw_output"], e["error"] is None)
             for i, e in enumerate(x for x in log.entries if x["call"] == STEP_CALL)]
    rollouts = sampled[start:] if isinstance(sampled, list) else []
    if len(rollouts) == len(steps):  # one sample per step (no re-asks), in order
        for step, rollout in zip(steps, rollouts, strict=True):
            step.rollout = rollout
    return Trajectory(history.id, index, steps, memory, history.persona)


@dataclass(frozen=True)
class RoleplayQuery:
    id: str
    text: str


def roleplay_items(trajectories: Sequence[Trajectory], queries: dict[str, Sequence[RoleplayQuery]],
                   k: int = 10) -> list[tuple[Trajectory, RoleplayItem]]:
    """One role-play item per (trajectory, query of its history), with the top-k of the
    trajectory's final memory for that query; a trajectory with no query is an error."""
    asked: list[tuple[Trajectory, RoleplayItem]] = []
    for t in trajectories:
        history_queries = list(queries.get(t.sample_id) or [])
        if not history_queries:
            raise ValueError(f"history {t.sample_id!r} has no role-play queries to judge its memory with")
        retrieved = t.memory.retrieve_many([q.text for q in history_queries], k)
        asked += [(t, RoleplayItem(q.id, t.sample_id, q.text, t.persona, tuple(r)))
                  for q, r in zip(history_queries, retrieved, strict=True)]
    return asked


def set_rewards(trajectories: Sequence[Trajectory], asked: Sequence[Trajectory],
                results: Sequence[RewardResult]) -> None:
    """Each trajectory's reward: the mean of its queries' results (`asked[i]` got `results[i]`)."""
    per: dict[int, list[RewardResult]] = {}
    for t, result in zip(asked, results, strict=True):
        per.setdefault(id(t), []).append(result)
    for t in trajectories:
        t.judged = per.get(id(t), [])
        t.reward = mean_reward(t.judged, {"steps": len(t.steps),
                                          "format_failures": sum(not st.format_ok for st in t.steps)})


def judge_trajectories(trajectories: Sequence[Trajectory], queries: dict[str, Sequence[RoleplayQuery]],
                       responder: Engine, judge: Engine, k: int = 10, settings: RoleplaySettings | None = None,
                       judge_retries: int = 2) -> None:
    """Each trajectory's reward: the mean persona-judge score of its role-play replies.

    For every query of its history, the responder replies in character from the persona
    and the top-k of the trajectory's final memory; the persona judge scores the reply
    against that memory (`mnemoray.rewards.roleplay`). A failed reply or verdict scores 0
    and is counted (`extras["failed"]`); a trajectory with no query is an error.
    """
    asked = roleplay_items(trajectories, queries, k)
    results = score_roleplay(responder, judge, [item for _, item in asked], judge_retries, settings)
    set_rewards(trajectories, [t for t, _ in asked], results)


@dataclass(frozen=True)
class StepSample:
    """One chunk step as a training sample: its trajectory's reward and advantage, copied."""

    id: str
    group: str
    trajectory: int
    step: int
    messages: list[dict[str, str]]
    completion: str
    reward: float
    advantage: float
    rollout: Rollout | None = None


def step_samples(trajectories: Sequence[Trajectory], scale: str = "std") -> list[StepSample]:
    """Every step of every judged trajectory, with the trajectory's reward and its advantage over
    the trajectories of the same history (computed once per trajectory, then copied, so a
    longer trajectory does not weigh more in the group's mean and std)."""
    from mnemoray.rl.advantages import group_advantages

    missing = [f"{t.sample_id}#{t.index}" for t in trajectories if t.reward is None]
    if missing:
        raise ValueError(f"trajectories without a reward (judge them first): {missing}")
    rewards = [t.reward.score for t in trajectories]
    adv = group_advantages(rewards, [t.sample_id for t in trajectories], scale=scale).advantages.tolist()
    return [StepSample(f"{t.sample_id}#{t.index}.{st.index}", t.sample_id, t.index, st.index, st.messages,
                       st.completion, t.reward.score, a, st.rollout)
            for t, a in zip(trajectories, adv, strict=True) for st in t.steps]


def step_batch(samples: Sequence[StepSample], pad_id: int) -> Any:
    """The steps as one GRPO token batch (`mnemoray.rl.update.worker_batch`), each with its copied advantage."""
    from mnemoray.rl.update import worker_batch

    missing = [s.id for s in samples if s.rollout is None]
    if missing:
        raise ValueError(f"steps without token ids (sample them with a SamplerPolicy): {missing[:5]}")
    return worker_batch([s.rollout for s in samples], [s.advantage for s in samples], None, pad_id)


__all__ = ["FRAMEWORK", "PolicyEngine", "RoleplayQuery", "SamplerPolicy", "Step", "StepSample", "Trajectory",
           "judge_trajectories", "load_dualmem", "persona_of_prompt", "roleplay_items", "run_trajectory", "set_rewards",
           "step_batch", "step_samples"]
