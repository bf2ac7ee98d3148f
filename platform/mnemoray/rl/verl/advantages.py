"""ADRPO attribution weights on a verl batch: per-sample weights, then advantages scaled row by row.

The weight of one sample depends on the whole batch (the dominant memory type is the type
with the largest summed count, `mnemoray.rewards.attribution`), so verl's per-sample reward
function can only pass each sample's counts along (`compute_score` emits them as JSON under
"attribution_counts", which verl puts in the batch's `non_tensor_batch`). After verl has
computed the advantages and before the actor update:

    attribution = apply_attribution(batch, alpha=4.0)   # weights into non_tensor_batch, advantages scaled

or, in two steps, `attribution_weights_for_batch(...)` then `scale_advantages(batch)`.
Scaling the advantage of a sample by w is the same as weighting both clip branches of its
policy loss by w (`mnemoray.rl.losses.policy_loss(weights=...)`).

Everything here is written against DataProto's duck-typed interface: `data.batch` is a
mapping of tensors (a TensorDict in verl) with "advantages" of shape [batch, response_len],
and `data.non_tensor_batch` a dict of numpy arrays of length batch. verl itself is not imported.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from mnemoray.rewards.attribution import ATTRIBUTION_ALPHA, CORE_TYPE, Attribution, attribution_weights
from mnemoray.rl.verl.reward import ATTRIBUTION_COUNTS_KEY, WEIGHT_KEY, parse_counts

ADVANTAGES_KEY = "advantages"


def counts_of(item: Any, key: str | None) -> dict[str, int]:
    """One sample's counts from a counts mapping, an extra_info holding them under `key`, JSON text of
    either, or None (no counts)."""
    if isinstance(item, str | bytes):
        item = json.loads(item) if item.strip() else None
    if item is None:
        return {}
    if not isinstance(item, Mapping):
        raise ValueError(f"expected counts, an extra_info mapping or JSON text, got {type(item).__name__}")
    if key is not None and key in item:
        return parse_counts(item[key])
    return parse_counts(item)


def attribution_weights_for_batch(extra_infos_or_counts: Sequence[Any], alpha: float = ATTRIBUTION_ALPHA,
                                  boost_core: bool = False, *, key: str | None = ATTRIBUTION_COUNTS_KEY,
                                  sample_types: Sequence[str] | None = None,
                                  core_type: str = CORE_TYPE) -> Attribution:
    """ADRPO weights for one batch (`mnemoray.rewards.attribution.attribution_weights` rules).

    Each item is one sample: its counts {memory type: int}, an extra_info mapping with the
    counts under `key`, JSON text of either (what `compute_score` puts in the batch), or
    None. A mapping WITHOUT `key` is taken as the counts themselves, so pass counts or
    extra_infos that carry `key`, not extra_infos without counts. None counts inside a
    mapping are dropped (parquet's fill for a type another row has). A numpy object array
    from `non_tensor_batch` works as the sequence.
    """
    counts = []
    for i, item in enumerate(list(extra_infos_or_counts)):
        try:
            counts.append(counts_of(item, key))
        except (TypeError, ValueError) as err:
            raise ValueError(f"sample {i}: {err}") from err
    types = None if sample_types is None else [str(t) for t in list(sample_types)]
    return attribution_weights(counts, types, alpha=alpha, boost_core=boost_core, core_type=core_type)


def _names(mapping: Any) -> list[str]:
    try:
        return sorted(map(str, mapping.keys()))
    except Exception:  # noqa: BLE001 - only for an error message
        return []


def scale_advantages(data: Any, weights_key: str = WEIGHT_KEY, advantages_key: str = ADVANTAGES_KEY) -> Any:
    """Multiply `data.batch[advantages_key]` ([batch, response_len]) row-wise by the weights in
    `data.non_tensor_batch[weights_key]` (one finite number >= 0 per sample); returns `data`.

    The product replaces the tensor in `data.batch` (same dtype and device). Padded positions
    stay 0. Only the advantages change: verl's actor reads them; GRPO's "returns" (a copy of
    the advantages) are left alone. A missing key, a weight array whose shape is not [batch],
    or a weight that is negative, NaN or not a number raises (KeyError / ValueError naming the key).
    """
    import torch

    batch, extras = data.batch, data.non_tensor_batch
    if advantages_key not in batch.keys():
        raise KeyError(f"data.batch has no {advantages_key!r} (keys: {_names(batch)}); "
                       "call scale_advantages after verl's compute_advantage")
    if weights_key not in extras:
        raise KeyError(f"data.non_tensor_batch has no {weights_key!r} (keys: {_names(extras)}); does the "
                       "reward function return it, or did apply_attribution / attribution_weights_for_batch run?")
    advantages = batch[advantages_key]
    if advantages.ndim != 2:
        raise ValueError(f"data.batch[{advantages_key!r}] must be [batch, response_len], "
                         f"got shape {tuple(advantages.shape)}")
    raw = extras[weights_key]
    try:
        weights = np.asarray(raw.detach().cpu().numpy() if isinstance(raw, torch.Tensor) else raw, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"data.non_tensor_batch[{weights_key!r}] must hold numbers: {err}") from err
    if weights.shape != (advantages.shape[0],):
        raise ValueError(f"data.non_tensor_batch[{weights_key!r}] has shape {weights.shape}, expected "
                         f"({advantages.shape[0]},): one weight per row of data.batch[{advantages_key!r}] "
                         f"{tuple(advantages.shape)}")
    bad = [i for i, w in enumerate(weights.tolist()) if not math.isfinite(w) or w < 0]
    if bad:
        raise ValueError(f"data.non_tensor_batch[{weights_key!r}] has weights that are negative or not finite "
                         f"at rows {bad[:10]}: {[weights[i] for i in bad[:10]]}")
    factor = torch.as_tensor(weights, dtype=advantages.dtype, device=advantages.device).unsqueeze(-1)
    batch[advantages_key] = advantages * factor
    return data


def sample_types_of(extras: Mapping[str, Any], type_key: str | None) -> list[str] | None:
    """Each sample's memory type: from the prompts' extra_info (`non_tensor_batch["extra_info"]`),
    else from a `non_tensor_batch[type_key]` entry (e.g. the length-penalty reward's "memory_type"
    extra); used only when every sample has one (mnemoray's GRPO step has the same rule), else None."""
    if type_key is None:
        return None
    candidates = []
    if "extra_info" in extras:
        candidates.append([info.get(type_key) if isinstance(info, Mapping) else None for info in extras["extra_info"]])
    if type_key in extras:
        candidates.append(list(extras[type_key]))
    for types in candidates:
        if types and all(t is not None and t == t for t in types):  # t == t: not NaN
            return [str(t) for t in types]
    return None


def apply_attribution(data: Any, alpha: float = ATTRIBUTION_ALPHA, boost_core: bool = False, *,
                      counts_key: str = ATTRIBUTION_COUNTS_KEY, weights_key: str = WEIGHT_KEY,
                      type_key: str | None = "memory_type", advantages_key: str = ADVANTAGES_KEY) -> Attribution:
    """ADRPO on a verl batch whose advantages are computed; returns the Attribution for logging.

    Batch weights from `non_tensor_batch[counts_key]` (one entry per sample, see
    `attribution_weights_for_batch`) and the samples' memory types (`sample_types_of`) are
    written to `non_tensor_batch[weights_key]`, replacing the per-sample value of
    `compute_score`, then `scale_advantages` multiplies the advantages by them. Without
    types for every sample, a sample belongs to the dominant type when its own count of it
    is positive.
    """
    extras = data.non_tensor_batch
    if counts_key not in extras:
        raise KeyError(f"data.non_tensor_batch has no {counts_key!r} (keys: {_names(extras)}); the reward "
                       "function's attribution_key must name it")
    attribution = attribution_weights_for_batch(extras[counts_key], alpha, boost_core, key=counts_key,
                                                sample_types=sample_types_of(extras, type_key))
    extras[weights_key] = np.asarray(attribution.weights, dtype=np.float64)
    scale_advantages(data, weights_key=weights_key, advantages_key=advantages_key)
    return attribution


def with_attribution(compute_advantage: Callable[..., Any], alpha: float = ATTRIBUTION_ALPHA,
                     boost_core: bool = False, *, counts_key: str = ATTRIBUTION_COUNTS_KEY,
                     weights_key: str = WEIGHT_KEY, type_key: str | None = "memory_type",
                     on_attribution: Callable[[Attribution], None] | None = None) -> Callable[..., Any]:
    """`compute_advantage(data, ...)` followed by `apply_attribution` on its result.

    For verl's legacy trainer (`trainer.use_v1=false`), whose fit loop calls the module-level
    `verl.trainer.ppo.ray_trainer.compute_advantage` right before the critic and actor
    updates: replace that attribute with this wrapper in the trainer's process (docs/verl.md).
    `on_attribution` receives each batch's Attribution (e.g. to log the dominant type).
    """

    @functools.wraps(compute_advantage)
    def wrapped(data: Any, *args: Any, **kwargs: Any) -> Any:
        data = compute_advantage(data, *args, **kwargs)
        attribution = apply_attribution(data, alpha, boost_core, counts_key=counts_key, weights_key=weights_key,
                                        type_key=type_key)
        if on_attribution is not None:
            on_attribution(attribution)
        return data

    wrapped.__mnemoray_attribution__ = True  # type: ignore[attr-defined]
    return wrapped


__all__ = ["ADVANTAGES_KEY", "apply_attribution", "attribution_weights_for_batch", "counts_of", "sample_types_of",
           "scale_advantages", "with_attribution"]
