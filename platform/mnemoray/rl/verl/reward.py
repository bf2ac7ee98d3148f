"""mnemoray rewards as a verl custom reward function (`custom_reward_function` in a verl config).

verl calls `compute_score(data_source=..., solution_str=..., ground_truth=..., extra_info=...,
**reward_kwargs)` once per response, with `reward_kwargs` taken from
`reward.custom_reward_function.reward_kwargs` in the trainer config. This adapter turns
those calls into calls of a mnemoray reward (a `REWARDS` name, or a file reference
"path/to/file.py:function") through `call_reward`, so a reward that raises or returns NaN
is a counted failure (score 0.0, `reward_failed` 1, `reward_error` set), not a crashed step.

The returned dict always has the same keys for a given configuration, because verl builds
its per-batch `reward_extra_info` arrays from the FIRST sample's keys and indexes every
other sample with them (a key missing from one sample is a KeyError in verl):

- "score": the reward (0.0 on failure),
- the reward's extras named by `extra_keys` (None where the reward did not return one;
  dicts and lists become JSON text so verl's validation metrics skip them),
- `attribution_key` (default "attribution_counts"): this sample's ADRPO counts as JSON text
  ("{}" without counts), taken from the reward's extras or else from extra_info; the batch
  step (`mnemoray.rl.verl.advantages`) turns them into per-sample weights,
- "attribution_weight": extra_info["attribution_weight"] when the data carries a
  precomputed weight, else 1.0 (a single sample cannot know the batch's dominant type),
- "attribution_invalid": 1 when the counts or the weight were malformed (they are then
  taken as none / 1.0, like mnemoray's own GRPO step: a bad count must not zero a score),
- "reward_failed": 0 or 1 (1: the score is a failure's 0.0), "reward_error": "" or the
  reasons (the reward's error and any attribution problem).

Judge rewards score whole batches with an engine; those that also run without one
(`engine_optional`, e.g. membuilder-qa: the dense QA reward, its answers matched by
"contains" without an engine) are called here one sample at a time, with the engine of
`reward_kwargs.engine` (an engine config file, built once per process) when given. Its
`attribution_counts` come out like any reward's, for the ADRPO batch step.

Configuration mistakes (an unknown reward name, a judge reward that needs an engine, a
custom file that does not load, an engine file that does not validate) raise
`RewardConfigError` on the first call: they are not per-sample failures and should stop the
run instead of training on zeros.
"""

from __future__ import annotations

import json
import logging
import numbers
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from mnemoray.registry import UnknownName
from mnemoray.rewards.registry import REWARDS, RewardLoadError, load_custom_reward
from mnemoray.rewards.scoring import as_score, call_reward

logger = logging.getLogger(__name__)

DEFAULT_REWARD = "keyword-count"
ATTRIBUTION_COUNTS_KEY = "attribution_counts"
WEIGHT_KEY = "attribution_weight"
INVALID_KEY = "attribution_invalid"
FAILED_KEY = "reward_failed"
ERROR_KEY = "reward_error"
GROUND_TRUTH_JSON_FLAG = "mnemoray_ground_truth_json"  # set by export_verl_parquet on JSON-encoded ground truths

# The extras each registered reward can return; every one of them is always emitted (None when absent).
EXTRA_KEYS: dict[str, tuple[str, ...]] = {
    "keyword-count": ("chars",),
    "dense-qa": ("correct", "total"),
    "length-penalty": ("task_reward", "length_penalty", "memory_type", "format_ok", "tokens", "rho"),
    "membuilder-qa": ("task_reward", "length_penalty", "memory_type", "format_ok", "format_failed", "qa_total",
                      "qa_failed", "qa_correct", "match"),
}
# Keyword arguments verl's reward managers add on their own (reward-model routing); accepted and ignored.
VERL_CALL_KWARGS = frozenset({"reward_router_address", "reward_model_tokenizer"})


class RewardConfigError(ValueError):
    """The adapter was configured with a reward it cannot run; the message says which and why."""


_cache_lock = threading.Lock()
_reward_cache: dict[tuple[str, str | None], Callable[..., Any]] = {}
_warned_kwargs: set[str] = set()


def is_file_reference(reward: str) -> bool:
    """True for "path/to/file.py" or "path/to/file.py:function"."""
    path = reward.rsplit(":", 1)[0] if ":" in reward else reward
    return path.endswith(".py")


def build_judge_engine(path: str) -> Any:
    """The engine of an engine config file (mnemoray.config.llm.EngineConfig); RewardConfigError naming it."""
    from mnemoray.config import load_config
    from mnemoray.config.base import ConfigError
    from mnemoray.config.llm import EngineConfig
    from mnemoray.llm.registry import build_engine

    try:
        return build_engine(load_config(EngineConfig, path))
    except (ConfigError, OSError, ValueError) as err:
        raise RewardConfigError(f"reward engine {path}: {err}") from err


def per_sample(reward: str, spec: Any, engine_path: str | None) -> Callable[..., Any]:
    """A batch judge reward as a verl-signature function: each call scores a batch of one."""
    from mnemoray.registry import load_target
    from mnemoray.rewards.items import RewardItem

    batch_fn, adapter = REWARDS.load(reward), load_target(spec.item_adapter)
    engine = build_judge_engine(engine_path) if engine_path else None

    def score(data_source: str, solution_str: str, ground_truth: Any, extra_info: Mapping[str, Any] | None = None
              ) -> dict[str, Any]:
        info = dict(extra_info or {})
        sample_id = str(info.get("mnemoray_id") or info.get("index") or "sample")
        (result,) = batch_fn(engine, [adapter(RewardItem(sample_id, data_source, solution_str, ground_truth, info))],
                             0 if engine is None else 2)
        if result.failed:
            raise ValueError(result.error)
        return {"score": result.score, **result.extras}

    score.__qualname__ = f"{reward}_per_sample"
    return score


def resolve_reward(reward: str, engine: str | None = None) -> Callable[..., Any]:
    """The verl-signature function `reward` names (cached per process); RewardConfigError otherwise."""
    if not isinstance(reward, str) or not reward:
        raise RewardConfigError(f"reward must be a registered name or 'path/to/file.py:function', got {reward!r}")
    with _cache_lock:
        if (reward, engine) in _reward_cache:
            return _reward_cache[(reward, engine)]
        if is_file_reference(reward):
            try:
                fn = load_custom_reward(reward)
            except RewardLoadError as err:
                raise RewardConfigError(str(err)) from err
        else:
            try:
                spec = REWARDS.spec(reward)
            except UnknownName as err:
                raise RewardConfigError(f"{err} (or give a file reference 'path/to/file.py:function')") from err
            if spec.needs_judge and not (spec.engine_optional or engine):
                raise RewardConfigError(
                    f"reward {reward!r} calls an LLM judge on whole batches; verl's per-sample custom reward "
                    "function runs it only with reward_kwargs.engine (an engine config file), one call per sample "
                    "(or judge upstream and use a reward that reads the verdicts, e.g. dense-qa)")
            if reward == "custom":
                raise RewardConfigError("reward 'custom' needs the file itself: set reward to 'path/file.py:function'")
            fn = per_sample(reward, spec, engine) if spec.needs_judge else REWARDS.load(reward)
        _reward_cache[(reward, engine)] = fn
        return fn


def clean_extra_info(extra_info: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of extra_info without None values.

    Parquet stores extra_info as one struct column, so a key that only some rows have reads
    back as None in the others (in verl and in `load_prompts`); mnemoray rewards treat a
    present key as meaningful, so None and absent must be the same thing here.
    """
    if extra_info is None:
        return {}
    if not isinstance(extra_info, Mapping):
        raise TypeError(f"extra_info must be a mapping, got {type(extra_info).__name__}")
    return {str(k): v for k, v in extra_info.items() if v is not None}


def decode_ground_truth(ground_truth: Any, extra_info: Mapping[str, Any]) -> Any:
    """The original ground truth of a row that `export_verl_parquet` stored as JSON text."""
    if extra_info.get(GROUND_TRUTH_JSON_FLAG) and isinstance(ground_truth, str):
        return json.loads(ground_truth)
    return ground_truth


def parse_counts(value: Any) -> dict[str, int]:
    """ADRPO counts {memory type: int >= 0} from a mapping or its JSON text; None values are dropped."""
    if value is None:
        return {}
    if isinstance(value, str | bytes):
        value = json.loads(value) if value.strip() else {}
    if not isinstance(value, Mapping):
        raise ValueError(f"counts must be a mapping of memory type -> int, got {type(value).__name__}")
    counts: dict[str, int] = {}
    for kind, count in value.items():
        if count is None:
            continue
        if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 0:
            raise ValueError(f"count of {kind!r} must be an integer >= 0, got {count!r}")
        counts[str(kind)] = int(count)
    return counts


def loggable(value: Any) -> Any:
    """A value verl can stack into a numpy array and average (numbers) or skip (str, None)."""
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, np.generic):  # numpy scalars (np.bool_ is not a numbers.Integral)
        return loggable(value.item())
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return json.dumps(value, default=str, sort_keys=True)


def select_extras(extras: Mapping[str, Any], reward: str, extra_keys: Sequence[str] | str | None) -> dict[str, Any]:
    """The extras to emit: `extra_keys` ("all" passes everything through), else the reward's known keys."""
    if extra_keys == "all":
        keys: Sequence[str] = list(extras)
    elif extra_keys is None:
        keys = EXTRA_KEYS.get(reward, ())
    elif isinstance(extra_keys, str):
        keys = [extra_keys]
    else:
        keys = [str(k) for k in extra_keys]
    return {key: loggable(extras.get(key)) for key in keys}


def warn_unknown_kwargs(kwargs: Mapping[str, Any]) -> None:
    for key in sorted(set(kwargs) - VERL_CALL_KWARGS - _warned_kwargs):
        _warned_kwargs.add(key)
        logger.warning("mnemoray verl reward: ignoring unknown keyword %r (check reward_kwargs for a typo)", key)


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: Mapping[str, Any] | None = None,
                  reward: str = DEFAULT_REWARD, attribution_key: str | None = ATTRIBUTION_COUNTS_KEY,
                  extra_keys: Sequence[str] | str | None = None, engine: str | None = None,
                  **kwargs: Any) -> dict[str, Any]:
    """verl custom reward function: the mnemoray reward `reward` on one response (see the module docstring).

    reward: a `REWARDS` name without a judge (keyword-count, length-penalty, dense-qa), a
      judge reward whose engine is optional (membuilder-qa), or "path/to/file.py:function"
      (a user's verl-style compute_score; use an absolute path, verl's reward workers may
      run in another directory).
    engine: an engine config file for a judge reward (absolute path), built once per process.
    attribution_key: where this sample's ADRPO counts are (reward extras first, then
      extra_info) and the key they are emitted under; None emits no counts.
    extra_keys: which reward extras to emit: None = the registered reward's known extras
      (none for file rewards), a list of names, or "all" (only for rewards whose extras never
      vary between samples: verl requires the same keys for every sample).
    """
    warn_unknown_kwargs(kwargs)
    fn = resolve_reward(reward, engine)
    errors: list[str] = []
    try:
        info = clean_extra_info(extra_info)
        truth = decode_ground_truth(ground_truth, info)
    except (TypeError, ValueError) as err:
        info, truth = {}, ground_truth
        errors.append(f"bad extra_info or ground truth: {type(err).__name__}: {err}")
    if not errors:
        result = call_reward(fn, data_source, solution_str, truth, info)
        if result.error is not None:
            errors.append(result.error)
        score, extras = result.score, dict(result.extras)
    else:
        score, extras = 0.0, {}

    out: dict[str, Any] = {"score": 0.0}
    out.update(select_extras(extras, reward, extra_keys))
    problems: list[str] = []  # bad attribution inputs: counted, but they do not fail the score
    if attribution_key is not None:
        raw = extras[attribution_key] if attribution_key in extras else info.get(attribution_key)
        try:
            counts = parse_counts(raw)
        except (TypeError, ValueError) as err:
            counts = {}
            problems.append(f"bad {attribution_key} (counted as none): {err}")
        out[attribution_key] = json.dumps(counts, sort_keys=True)
    weight = 1.0
    if WEIGHT_KEY in info:
        try:
            weight = as_score(info[WEIGHT_KEY])
            if weight < 0:
                raise ValueError(f"must be >= 0, got {weight}")
        except ValueError as err:
            weight = 1.0
            problems.append(f"bad extra_info[{WEIGHT_KEY!r}] (using 1.0): {err}")
    out[WEIGHT_KEY] = weight
    out[INVALID_KEY] = 1 if problems else 0
    out["score"] = 0.0 if errors else float(score)
    out[FAILED_KEY] = 1 if errors else 0
    out[ERROR_KEY] = "; ".join(errors + problems)
    if errors or problems:
        logger.debug("mnemoray verl reward for %s: %s", data_source, out[ERROR_KEY])
    return out


__all__ = ["ATTRIBUTION_COUNTS_KEY", "DEFAULT_REWARD", "ERROR_KEY", "EXTRA_KEYS", "FAILED_KEY", "INVALID_KEY",
           "GROUND_TRUTH_JSON_FLAG", "RewardConfigError", "WEIGHT_KEY", "clean_extra_info", "compute_score",
           "decode_ground_truth", "parse_counts", "resolve_reward"]
