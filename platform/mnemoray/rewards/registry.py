"""The reward registry: every reward's name, implementation and whether it calls a judge.

Training configs name a reward; config validation, CLI help and the reward actors read
this table. Two kinds of entries:

- `needs_judge=False`: the target is a verl-style `compute_score(data_source,
  solution_str, ground_truth, extra_info=None)` returning a number or a dict with
  "score"; call it through `mnemoray.rewards.scoring.call_reward`. Judged inputs (QA
  verdicts) arrive already computed in `extra_info`.
- `needs_judge=True`: the target takes an engine and a batch of items and calls the LLM
  judge itself (`judge_responses(engine, items, max_retries)`); reward actors hold the engine.

The "custom" entry's target is `load_custom_reward`, which turns "path/to/file.py:function"
into the user's `compute_score` (verl's custom reward function interface).
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnemoray.registry import Registry

DEFAULT_FUNCTION = "compute_score"  # verl's default name for a custom reward function


@dataclass(frozen=True)
class RewardSpec:
    name: str
    target: Any  # "module:function" or the function itself
    description: str
    needs_judge: bool  # True: target(engine, items, max_retries); False: a verl compute_score
    item_adapter: Any = None  # judge rewards: "module:function" turning a RewardItem into the target's item
    engine_optional: bool = False  # judge rewards that also run without an engine (target gets engine=None)


REWARDS: Registry[RewardSpec] = Registry("reward")


def register_reward(spec: RewardSpec, *, replace: bool = False) -> RewardSpec:
    return REWARDS.register(spec, replace=replace)


class RewardLoadError(ValueError):
    """A custom reward file or function that cannot be used; the message names both."""


def split_reference(reference: str) -> tuple[Path, str]:
    """"path/file.py:function" -> (path, function); no ":function" means compute_score."""
    path, sep, function = str(reference).rpartition(":")
    if not sep or not function.isidentifier() or not path:
        return Path(reference), DEFAULT_FUNCTION
    return Path(path), function


def load_custom_reward(reference: str) -> Callable[..., Any]:
    """The function `reference` ("path/to/file.py:function") names, loaded from the FILE.

    The file is executed as a module of its own (not put on sys.path), like verl's
    `custom_reward_function.path` + `.name`. RewardLoadError when the file is missing or
    fails to import, or when the function is missing or not callable.
    """
    path, function = split_reference(reference)
    where = f"custom reward {function!r} in {path}"
    if not path.is_file():
        raise RewardLoadError(f"{where}: no such file")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    module_name = f"mnemoray_custom_reward_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise RewardLoadError(f"{where}: not loadable as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        sys.modules.pop(module_name, None)
        raise RewardLoadError(f"{where}: importing the file failed: {type(err).__name__}: {err}") from err
    if not hasattr(module, function):
        public = sorted(n for n in vars(module) if not n.startswith("_") and callable(getattr(module, n)))
        raise RewardLoadError(f"{where}: the file has no {function!r} (callables there: {public})")
    fn = getattr(module, function)
    if not callable(fn):
        raise RewardLoadError(f"{where}: {function!r} is a {type(fn).__name__}, not callable")
    return fn


for _spec in (
    RewardSpec("dense-qa", "mnemoray.rewards.qa:compute_score",
               "MemBuilder dense QA: correct / total of a session's judged synthetic questions "
               "(extra_info['judgements'])", needs_judge=False),
    RewardSpec("length-penalty", "mnemoray.rewards.length_penalty:compute_score",
               "task reward x (1 - 0.8 P_len): core by tokens (150..400), other stores by length vs the expert's",
               needs_judge=False),
    RewardSpec("persona-judge", "mnemoray.rewards.persona_judge:judge_responses",
               "RoleMemo persona judge: LLM scores factual use 0.3, logic + persona fit 0.6, value/safety 0.1",
               needs_judge=True, item_adapter="mnemoray.rewards.persona_judge:from_reward_item"),
    RewardSpec("dualmem-roleplay", "mnemoray.rewards.roleplay:score_items",
               "DualMem trajectories: the engine replies in character from the memory's top-k for a role-play "
               "query, the persona judge scores the reply (the dualmem environment's trajectory reward)",
               needs_judge=True, item_adapter="mnemoray.rewards.roleplay:from_reward_item"),
    RewardSpec("membuilder-qa", "mnemoray.rewards.dense_qa:score_items",
               "MemBuilder dense QA in the loop: the rollout's ops on a copy of the pre-session memory, the "
               "session's cached questions answered and judged (or matched without an engine), x length penalty; "
               "attribution_counts for ADRPO", needs_judge=True,
               item_adapter="mnemoray.rewards.dense_qa:from_reward_item", engine_optional=True),
    RewardSpec("keyword-count", "mnemoray.rewards.toy:compute_score",
               "toy task: share of the reply's non-space characters that are in ground_truth (default 'e'); "
               "a random model learns it in a few dozen steps", needs_judge=False),
    RewardSpec("custom", "mnemoray.rewards.registry:load_custom_reward",
               "a user's compute_score from 'path/to/file.py:function' (load it with the target)",
               needs_judge=False),
):
    register_reward(_spec)


__all__ = ["DEFAULT_FUNCTION", "REWARDS", "RewardLoadError", "RewardSpec", "load_custom_reward", "register_reward",
           "split_reference"]
