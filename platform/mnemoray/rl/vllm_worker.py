"""The vLLM worker extension that takes the policy weights pushed to a `vllm` rollout engine.

vLLM mixes this class into its worker (`worker_extension_cls`), so the method below runs
where the model lives and `LLM.collective_rpc` can call it by name. This module imports
nothing from vLLM at import time: mnemoray stays importable without it. The method name
carries a `mnemoray_` prefix because vLLM refuses an extension that redefines an attribute
of its worker (current workers have their own `update_weights`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any


class PolicyWeights:
    """Mixed into vLLM's worker, which provides `model_runner`, `model_config` and `device`."""

    def mnemoray_load_weights(self, weights: Iterable[tuple[str, Any]]) -> dict[str, Any]:
        """A full state dict (the policy's names) through the model's own `load_weights`, which
        fuses and shards it (q/k/v into qkv_proj, ...). Inside vLLM's layerwise reload where it
        exists (its worker's own path for such updates): layers are processed again, so kernels
        holding a processed copy of a weight see the new one. Reports the parameters that got
        nothing, the check vLLM's loader makes. `weights` may be a one-pass stream (tensors
        arriving bucket by bucket): it is read once, as the model's loader asks."""
        import torch

        model = self.model_runner.model  # type: ignore[attr-defined]
        expected = {name for name, _ in model.named_parameters()}
        device = getattr(self, "device", None)
        counter = [0]
        with torch.no_grad(), (torch.device(device) if device is not None else contextlib.nullcontext()):
            reload = _layerwise_reload()
            if reload is not None:
                reload.initialize_layerwise_reload(model)
            try:
                loaded = model.load_weights(_counted(weights, counter))
            except KeyError as err:
                raise ValueError(f"weights do not fit the rollout model: unexpected {err}") from err
            if reload is not None:
                reload.finalize_layerwise_reload(model, self.model_config)  # type: ignore[attr-defined]
        missing = sorted(expected - set(loaded)) if loaded is not None else []
        return {"tensors": counter[0], "loaded": len(loaded or ()), "missing": missing}


def _counted(weights: Iterable[tuple[str, Any]], counter: list[int]) -> Iterator[tuple[str, Any]]:
    for pair in weights:
        counter[0] += 1
        yield pair


def _layerwise_reload() -> Any:
    """vLLM's layerwise reload helpers, or None on releases without them (plain load then)."""
    try:
        from vllm.model_executor.model_loader import reload
    except ImportError:
        return None
    if hasattr(reload, "initialize_layerwise_reload") and hasattr(reload, "finalize_layerwise_reload"):
        return reload
    return None


__all__ = ["PolicyWeights"]
