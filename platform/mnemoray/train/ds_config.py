"""The DeepSpeed config dict and the LR schedule, derived from SFTConfig (pure, unit-testable)."""

from __future__ import annotations

import copy
import math
from typing import Any

from mnemoray.config.train import SFTConfig, SFTDeepSpeed, SFTOptim


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def deepspeed_config(cfg: SFTConfig, world_size: int) -> dict[str, Any]:
    return deepspeed_config_for(cfg.deepspeed, cfg.optim, cfg.schedule.micro_batch_size, cfg.schedule.grad_accum,
                                world_size)


def deepspeed_config_for(ds: SFTDeepSpeed, opt: SFTOptim, micro_batch_size: int, grad_accum: int,
                         world_size: int) -> dict[str, Any]:
    """The DeepSpeed config of any training stage (SFT, GRPO) from its DeepSpeed and optimizer blocks."""
    zero: dict[str, Any] = {"stage": ds.zero_stage}
    if ds.offload_optimizer != "none":
        zero["offload_optimizer"] = {"device": ds.offload_optimizer}
    if ds.offload_param != "none":
        zero["offload_param"] = {"device": ds.offload_param}
    if ds.zero_stage == 3:
        # the HF export gathers full weights on rank 0
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    optimizer_params: dict[str, Any] = {"lr": opt.lr, "betas": list(opt.betas), "weight_decay": opt.weight_decay}
    if ds.torch_adam:
        optimizer_params["torch_adam"] = True
    conf: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": micro_batch_size * grad_accum * world_size,
        "gradient_clipping": opt.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": ds.dtype == "bf16"},
        "fp16": {"enabled": ds.dtype == "fp16"},
        "optimizer": {"type": "AdamW", "params": optimizer_params},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    return _merge(conf, copy.deepcopy(ds.extra))


def reference_config(ds_conf: dict[str, Any]) -> dict[str, Any]:
    """The config of a frozen copy of the policy (the KL reference) run as a DeepSpeed engine:
    the policy's ZeRO stage, dtype, batch sizes and parameter offload, without an optimizer
    or anything only an optimizer uses."""
    conf = {k: copy.deepcopy(v) for k, v in ds_conf.items() if k not in ("optimizer", "scheduler", "gradient_clipping")}
    conf["zero_optimization"].pop("offload_optimizer", None)
    return conf


def compute_dtype(ds_conf: dict[str, Any]) -> str:
    """The dtype the engine computes in: "bfloat16", "float16" or "float32"."""
    for key, name in (("bf16", "bfloat16"), ("fp16", "float16")):
        if ds_conf.get(key, {}).get("enabled"):
            return name
    return "float32"


def lr_factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """Linear warmup to 1, then cosine decay to min_ratio at total_steps (multiplier of the base lr)."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def total_steps(cfg: SFTConfig, train_rows: int, world_size: int) -> int:
    """Optimizer steps of the run; the data must fill at least one step on every worker."""
    per_step = cfg.schedule.micro_batch_size * cfg.schedule.grad_accum * world_size
    if train_rows < per_step:
        raise ValueError(
            f"{train_rows} training rows cannot fill one step of {per_step} rows "
            f"(micro_batch_size x grad_accum x workers); add data or lower them"
        )
    if cfg.schedule.max_steps is not None:
        return cfg.schedule.max_steps
    return max(1, math.ceil(cfg.schedule.epochs * (train_rows // per_step)))
