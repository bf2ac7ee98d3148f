"""The environment registry: what a GRPO prompt is and how it is read.

An environment's target is `load(path, skip_invalid) -> (list[RLPrompt], errors)`; the
prompts carry what the reward needs (ground truth, extra_info). Memory-construction
environments (MemBuilder sessions, DualMem turns) register here next to "prompts".
An environment may also name a `trajectories` hook: a collector class the GRPO controller
uses instead of single-turn sampling when the config sets `environment.trajectories`
(multi-step rollouts; see `mnemoray.rl.collect`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mnemoray.registry import Registry


@dataclass(frozen=True)
class EnvironmentSpec:
    name: str
    target: Any  # "module:function": load(path, skip_invalid) -> (prompts, errors)
    description: str
    trajectories: Any = None  # "module:Class": a multi-step collector (mnemoray.rl.collect.Collector)


ENVIRONMENTS: Registry[EnvironmentSpec] = Registry("environment")

ENVIRONMENTS.register(EnvironmentSpec(
    "prompts", "mnemoray.rl.environments.prompts:load_prompts",
    "chat prompts from JSONL or verl-style parquet: prompt, data_source, ground_truth, extra_info"))
ENVIRONMENTS.register(EnvironmentSpec(
    "membuilder", "mnemoray.rl.environments.membuilder:load_membuilder",
    "one prompt per MemBuilder agent per session from `memory build` trajectories (memory_type, expert_length, "
    "session group)"))
ENVIRONMENTS.register(EnvironmentSpec(
    "membuilder-qa", "mnemoray.rl.environments.membuilder_qa:load_membuilder_qa",
    "membuilder prompts plus each session's memory state and cached synthetic QA (the membuilder-qa reward); "
    "the questions are generated once by `train grpo-data --environment membuilder --qa-engine ...`"))
ENVIRONMENTS.register(EnvironmentSpec(
    "dualmem", "mnemoray.rl.environments.dualmem:load_dualmem",
    "DualMem recurrent chunks (MemAgent-style): one prompt per chunk step of a dualmem `memory build` log, with "
    "the persona and the memory so far; with environment.trajectories the policy writes the memory chunk by chunk "
    "in the loop and each trajectory is judged in role-play (reward dualmem-roleplay)",
    trajectories="mnemoray.rl.environments.dualmem_collect:DualmemCollector"))

__all__ = ["ENVIRONMENTS", "EnvironmentSpec"]
