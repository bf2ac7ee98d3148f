"""Starting or joining Ray (once per process, quiet defaults for a laptop or a cluster) and
the one-history-per-task Ray Data pattern the evaluation and build jobs share."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

from mnemoray.config.ray import RayClusterConfig, RayConfig

# Workers load models from local paths only and keep their logs short.
WORKER_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
}


@contextlib.contextmanager
def ray_session(cfg: RayClusterConfig) -> Iterator[None]:
    """Use the running Ray if there is one, else connect to `address` or start local Ray.

    Only a Ray instance started here is shut down on exit.
    """
    import ray

    started = False
    if not ray.is_initialized():
        os.environ.setdefault("RAY_DEDUP_LOGS", "1")
        kwargs = {"ignore_reinit_error": True, "runtime_env": {"env_vars": WORKER_ENV}}
        if cfg.address or os.environ.get("RAY_ADDRESS"):
            # joining a cluster (or running inside `ray job submit`): resources are the cluster's
            ray.init(address=cfg.address, **kwargs)
        else:
            # address="local": a new instance even when another Ray runs on this machine
            ray.init(address="local", num_cpus=cfg.num_cpus, include_dashboard=False, **kwargs)
        started = True
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def map_one_per_task(rows: list[dict[str, Any]], actor: type, constructor_kwargs: dict[str, Any], cfg: RayConfig):
    """A Ray Data pipeline with one row per task (a whole history) through a pool of `actor`s.

    Actors keep heavy state (models, engines) across tasks; the pool never exceeds the
    number of rows, and each actor gets the configured CPUs/GPUs.
    """
    import ray

    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    return ds.map_batches(
        actor,
        fn_constructor_kwargs=constructor_kwargs,
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=min(cfg.workers, len(rows))),
        num_cpus=cfg.cpus_per_worker,
        num_gpus=cfg.gpus_per_worker or None,
    )
