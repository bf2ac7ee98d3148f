"""The environment registry: what a GRPO prompt is and how it is read.

An environment's target is `load(path, skip_invalid) -> (list[RLPrompt], errors)`; the
prompts carry what the reward needs (ground truth, extra_info). Memory-construction
environments (MemBuilder sessions, DualMem turns) register here next to "prompts".
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
    "the persona and the memory so far; trajectories judged in role-play by the persona judge"))

__all__ = ["ENVIRONMENTS", "EnvironmentSpec"]
