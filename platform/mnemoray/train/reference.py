"""The frozen reference policy of the KL term, laid out like the policy it is compared with.

Under ZeRO-3 the policy's weights are split across ranks because one rank cannot hold them,
so the reference is split the same way: a DeepSpeed engine without an optimizer, whose
forward pass gathers each layer as the policy's does (every rank must then score the same
number of micro-batches, as it trains them). Under ZeRO 0-2 every rank holds the whole
policy anyway, and the reference is a plain module next to it, on its device and in its
compute dtype. See docs/ARCHITECTURE.md, "GRPO on Ray".
"""

from __future__ import annotations

from typing import Any

from mnemoray.train.ds_config import compute_dtype, reference_config
from mnemoray.train.loop import load_for_deepspeed


def build_reference(ds_conf: dict[str, Any], model_path: str, device: Any) -> Any:
    """The model at `model_path`, frozen, for scoring only (call it under torch.no_grad)."""
    import torch

    if ds_conf["zero_optimization"]["stage"] == 3:
        import deepspeed

        conf = reference_config(ds_conf)
        model, keep_alive = load_for_deepspeed(conf, model_path)
        model.requires_grad_(False)
        reference, _, _, _ = deepspeed.initialize(model=model, config=conf)
        reference._mnemoray_hf_ds_config = keep_alive
    else:
        from transformers import AutoModelForCausalLM

        dtype = getattr(torch, compute_dtype(ds_conf))
        reference = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(device)
        reference.requires_grad_(False)
    reference.eval()
    return reference


__all__ = ["build_reference"]
