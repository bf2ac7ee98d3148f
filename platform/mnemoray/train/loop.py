"""The per-worker SFT loop: a DeepSpeed engine stepping through this worker's data.

It talks to the outside world only through `WorkerIO` (batches, the checkpoint to
resume from, reporting a checkpoint), so the same loop runs under Ray Train and, for
the overhead benchmark, under the bare `deepspeed` launcher.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from mnemoray.config.train import SFTConfig
from mnemoray.torch_threads import set_torch_threads
from mnemoray.train.collectives import all_sum
from mnemoray.train.ds_config import deepspeed_config, lr_factor

STATE_KEY = "mnemoray_sft"
DS_TAG = "deepspeed"


class WorkerIO(Protocol):
    rank: int
    world_size: int

    def train_batches(self, epoch: int) -> Iterable[dict[str, Any]]:
        """One epoch of this worker's collated micro-batches (same count on every worker),
        in an order fixed by the shuffle seed and `epoch` (see tokenize.epoch_order)."""

    def eval_batches(self) -> Iterable[dict[str, Any]] | None:
        """This worker's eval batches, or None when there is no eval set."""

    def resume_dir(self) -> contextlib.AbstractContextManager[Path | None]:
        """The latest checkpoint folder, or None on a fresh start."""

    def save(self, metrics: dict[str, Any], directory: Path, step: int) -> None:
        """Persist this worker's part of a checkpoint (a barrier across workers)."""


class MetricsLog:
    """metrics.jsonl and events.jsonl, written by rank 0.

    A resume drops metrics past the restored checkpoint (they are recomputed), so the
    file always reads as one run with strictly increasing steps.
    """

    def __init__(self, run_dir: Path, enabled: bool, resumed_step: int, **start_fields: Any):
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.events = run_dir / "events.jsonl"
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        kept: list[str] = []
        if resumed_step and self.path.exists():
            kept = [ln for ln in self.path.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= resumed_step]
        self.path.write_text("".join(ln + "\n" for ln in kept))
        # events.jsonl is append-only: every (re)start shows, with what the engine really runs
        self.event("start", step=resumed_step, **start_fields)

    def _append(self, path: Path, record: dict[str, Any]) -> None:
        with path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    def event(self, name: str, **fields: Any) -> None:
        if self.enabled:
            self._append(self.events, {"event": name, "time": time.time(), "pid": os.getpid(), **fields})

    def log(self, record: dict[str, Any]) -> None:
        if self.enabled:
            self._append(self.path, record)


def _setup_torch(cfg: SFTConfig) -> None:
    os.environ.setdefault("DS_ACCELERATOR", cfg.ray.accelerator)
    import torch

    set_torch_threads(cfg.ray.torch_threads)
    torch.manual_seed(cfg.schedule.seed)


def _forward(engine: Any, batch: dict[str, Any]) -> Any:
    # held shards are collated on the CPU; streamed ones arrive on the worker's device (a no-op move)
    inputs = {k: v.to(engine.device) for k, v in batch.items()
              if k in ("input_ids", "labels", "attention_mask", "position_ids")}
    # no KV cache: with one, transformers ignores restarting position ids and packed samples would mix
    return engine(**inputs, use_cache=False).loss


def _label_count(batch: dict[str, Any]) -> int:
    return int((batch["labels"][:, 1:] != -100).sum())


def evaluate(engine: Any, batches: Iterable[dict[str, Any]] | None) -> float | None:
    """Token-weighted mean loss over every worker's eval shard."""
    if batches is None:
        return None
    import torch

    engine.eval()
    loss_sum, count = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            n = _label_count(batch)
            loss_sum += float(_forward(engine, batch)) * n
            count += n
    engine.train()
    total, n = all_sum([loss_sum, count])
    return total / n if n else None


def build_engine(cfg: SFTConfig, model_path: str, world_size: int, total: int) -> Any:
    opt = cfg.optim
    return build_ds_engine(deepspeed_config(cfg, world_size), model_path, cfg.ray.accelerator,
                           cfg.model.gradient_checkpointing,
                           lambda s: lr_factor(s, total, opt.warmup_steps, opt.min_lr_ratio))


def load_for_deepspeed(ds_conf: dict[str, Any], model_path: str) -> tuple[Any, Any]:
    """The HF model at `model_path` in fp32, loaded as `ds_conf` wants it, and the object that
    must outlive the engine built from it (None unless ZeRO-3)."""
    import torch
    from transformers import AutoModelForCausalLM

    keep_alive = None
    if ds_conf["zero_optimization"]["stage"] == 3 and importlib.util.find_spec("accelerate") is not None:
        # lets from_pretrained load weights straight into ZeRO-3 partitions (transformers needs
        # accelerate for it); without it every rank loads the full model before partitioning
        from transformers.integrations import HfDeepSpeedConfig

        keep_alive = HfDeepSpeedConfig(ds_conf)
    return AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32), keep_alive


def build_ds_engine(ds_conf: dict[str, Any], model_path: str, accelerator: str, gradient_checkpointing: bool,
                    lr_lambda: Any) -> Any:
    """A DeepSpeed engine over the HF checkpoint at `model_path` (any training stage)."""
    import deepspeed
    from torch.optim.lr_scheduler import LambdaLR

    # reuse the process group Ray Train (or the launcher) set up; ZeRO-3 loading needs it early
    deepspeed.init_distributed(dist_backend="gloo" if accelerator == "cpu" else "nccl")
    model, keep_alive = load_for_deepspeed(ds_conf, model_path)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()

    def scheduler(optimizer: Any) -> LambdaLR:
        return LambdaLR(optimizer, lr_lambda)

    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=[p for p in model.parameters() if p.requires_grad],
        config=ds_conf, lr_scheduler=scheduler,
    )
    engine._mnemoray_hf_ds_config = keep_alive
    if engine.zero_optimization_stage() == 0 and engine.dp_world_size == 1:
        # one rank: the gradient all-reduce is an identity that still flattens and copies every
        # gradient (~10 % of a 100M CPU update); ZeRO 1-2 need that path to fill their partitions
        engine.enable_backward_allreduce = False
    return engine


def engine_facts(engine: Any) -> dict[str, Any]:
    """What the DeepSpeed engine actually runs (not what was asked for), for events.jsonl."""
    param_device = getattr(engine.zero_offload_param(), "device", None)
    return {
        "zero_stage": engine.zero_optimization_stage(),
        "param_dtype": str(next(engine.module.parameters()).dtype).removeprefix("torch."),
        "gradient_checkpointing": bool(getattr(engine.module, "is_gradient_checkpointing", False)),
        "optimizer": type(engine.optimizer).__name__,
        "backward_allreduce": bool(engine.enable_backward_allreduce),
        "offload_optimizer": bool(engine.zero_cpu_offload()),
        "offload_param": param_device is not None and getattr(param_device, "value", param_device) != "none",
    }


def _skip(batches: Iterable[dict[str, Any]], n: int, window: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Batches from index n on; the time spent waiting for each one is added to window["wait"]."""
    it = iter(batches)
    i = 0
    while True:
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            return
        if i >= n:
            window["wait"] += time.perf_counter() - t0
            yield i, batch
        i += 1


def train_worker(cfg: SFTConfig, io: WorkerIO, model_path: str, total: int) -> dict[str, Any]:
    """Train until `total` optimizer steps, resuming from io.resume_dir(); returns the last metrics."""
    _setup_torch(cfg)
    from mnemoray.train.export import export_hf

    engine = build_engine(cfg, model_path, io.world_size, total)
    state = {"epoch": 0, "batches_in_epoch": 0}
    with io.resume_dir() as ckpt:
        if ckpt is not None:
            _, client = engine.load_checkpoint(str(ckpt), tag=DS_TAG)
            state = dict(client[STATE_KEY])
    step = engine.global_steps
    log = MetricsLog(cfg.run_dir, io.rank == 0, step, engine=engine_facts(engine))
    last: dict[str, Any] = {"step": step}
    if step == 0:
        eval_loss = evaluate(engine, io.eval_batches())
        if eval_loss is not None:
            last = {"step": 0, "eval_loss": eval_loss}
            log.log(last)
    window = {"loss": 0.0, "micro": 0, "tokens": 0, "t0": time.perf_counter(), "steps": 0, "wait": 0.0}
    while step < total:
        for i, batch in _skip(io.train_batches(state["epoch"]), state["batches_in_epoch"], window):
            loss = _forward(engine, batch)
            engine.backward(loss)
            engine.step()
            state["batches_in_epoch"] = i + 1
            window["loss"] += float(loss.detach())
            window["micro"] += 1
            window["tokens"] += int(batch["num_tokens"])
            if engine.global_steps == step:
                continue  # still accumulating
            step = engine.global_steps
            window["steps"] += 1
            last = _after_step(cfg, io, engine, step, total, state, window, log, model_path, export_hf)
            if step >= total:
                break
        else:
            state = {"epoch": state["epoch"] + 1, "batches_in_epoch": 0}
    log.event("finished", step=step)
    return last


def _after_step(cfg: SFTConfig, io: WorkerIO, engine: Any, step: int, total: int, state: dict[str, Any],
                window: dict[str, Any], log: MetricsLog, model_path: str, export_hf: Any) -> dict[str, Any]:
    """Log, evaluate and checkpoint on the steps the schedule asks for (same decisions on every rank)."""
    sch = cfg.schedule
    record: dict[str, Any] = {"step": step}
    final = step >= total
    if step % sch.log_every == 0 or final:
        loss_sum, micro, tokens = all_sum([window["loss"], window["micro"], window["tokens"]])
        elapsed = time.perf_counter() - window["t0"]
        record.update(loss=loss_sum / max(micro, 1), lr=engine.get_lr()[0], epoch=state["epoch"],
                      tokens=int(tokens), tokens_per_s=tokens / elapsed if elapsed > 0 else None,
                      step_time_s=elapsed / max(window["steps"], 1),
                      data_wait_s=window["wait"] / max(window["steps"], 1))
        window.update(loss=0.0, micro=0, tokens=0, t0=time.perf_counter(), steps=0, wait=0.0)
    if (sch.eval_every and step % sch.eval_every == 0) or final:
        eval_loss = evaluate(engine, io.eval_batches())
        if eval_loss is not None:
            record["eval_loss"] = eval_loss
    if len(record) > 1 and io.rank == 0:
        log.log(record)
    if step % sch.save_every == 0 or final:
        tmp = Path(tempfile.mkdtemp(prefix=f"sft-step{step}-"))
        try:
            engine.save_checkpoint(str(tmp), tag=DS_TAG, client_state={STATE_KEY: state})
            if final:
                export_hf(engine, cfg.deepspeed.zero_stage, io.rank, model_path, tmp / "hf")
            io.save({**record, "step": step}, tmp, step)
            log.event("checkpoint", step=step)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        window["t0"] = time.perf_counter()  # checkpoint time is not step time
    return record
