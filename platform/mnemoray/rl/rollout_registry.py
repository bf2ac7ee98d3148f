"""The rollout-engine registry: which sampler a GRPO rollout actor runs (no torch at import).

A sampler is a class built as `cls(model_path, device=..., dtype=...)` with
`generate(prompts, settings, seed) -> list[Rollout]` (n per prompt, grouped, in prompt
order) and `load_weights(state_dict, version)`; see `rl/rollout.py:HFSampler`.
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mnemoray.registry import Registry


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    target: Any  # "module:Class" or the class
    description: str
    requires: str | None = None  # the optional package it needs

    def missing(self) -> str | None:
        """Why this sampler cannot run here (its package is not installed), or None."""
        if self.requires and importlib.util.find_spec(self.requires) is None:
            return (f"rollout engine '{self.name}' needs the '{self.requires}' package installed "
                    f"(GPU: pip install 'mnemoray[gpu]'); use one of {ROLLOUTS.names(requires=None)} otherwise")
        return None


ROLLOUTS: Registry[SamplerSpec] = Registry("rollout engine")
ROLLOUTS.register(SamplerSpec("hf", "mnemoray.rl.rollout:HFSampler",
                              "transformers generate with sampling (CPU or one GPU); weights pushed in place"))
ROLLOUTS.register(SamplerSpec("vllm", "mnemoray.rl.vllm_rollout:VLLMSampler",
                              "in-process vLLM (one GPU); weights pushed in place through a worker extension",
                              requires="vllm"))


RESERVED_OPTIONS = ("model_path", "device", "dtype", "model")  # set by the run, not by engine_options


def check_engine_options(name: str, options: Mapping[str, Any]) -> None:
    """Refuse, before any actor starts, `rollout.engine_options` the sampler `name` does not
    take (a sampler with **kwargs, such as vllm's, passes them on and checks them itself)."""
    taken = sorted(set(options) & set(RESERVED_OPTIONS))
    if taken:
        raise ValueError(f"rollout.engine_options cannot set {taken}: use rollout.device and rollout.dtype")
    params = inspect.signature(ROLLOUTS.load(name).__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = sorted(set(params) - {"self", *RESERVED_OPTIONS})
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"rollout.engine_options {unknown} are not options of the {name!r} rollout engine "
                         f"(it takes {accepted})")


def build_sampler(name: str, model_path: str, **kwargs: Any) -> Any:
    return ROLLOUTS.load(name)(model_path, **kwargs)


__all__ = ["RESERVED_OPTIONS", "ROLLOUTS", "SamplerSpec", "build_sampler", "check_engine_options"]
