"""Starting or joining Ray (once per process, quiet defaults for a laptop or a cluster) and
the one-history-per-task Ray Data pattern the evaluation and build jobs share."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
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

# Set by Ray's job supervisor in a submitted job's entrypoint (as in mnemoray.outputs).
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def worker_runtime_env(environ: Mapping[str, str] | None = None) -> dict[str, dict[str, str]]:
    """The runtime_env a driver passes to `ray.init`: WORKER_ENV, less the variables a submitted
    job's own runtime_env already sets (Ray refuses to merge a job's and a driver's runtime_env
    that set the same variable, and the job's value is the one the user chose)."""
    raw = (os.environ if environ is None else environ).get(JOB_CONFIG_ENV)
    taken: set[str] = set()
    if raw:
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            taken = set((json.loads(raw).get("runtime_env") or {}).get("env_vars") or {})
    return {"env_vars": {k: v for k, v in WORKER_ENV.items() if k not in taken}}


@contextlib.contextmanager
def ray_session(cfg: RayClusterConfig) -> Iterator[None]:
    """Use the running Ray if there is one, else connect to `address` or start local Ray.

    Only a Ray instance started here is shut down on exit.
    """
    import ray

    started = False
    if not ray.is_initialized():
        os.environ.setdefault("RAY_DEDUP_LOGS", "1")
        kwargs = {"ignore_reinit_error": True, "runtime_env": worker_runtime_env()}
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

    Actors keep heavy state (models, engines) across tasks; the pool autoscales between
    `min_workers` and `workers`, never beyond the number of rows, and each actor gets the
    configured CPUs/GPUs.
    """
    import ray

    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    return ds.map_batches(
        actor,
        fn_constructor_kwargs=constructor_kwargs,
        batch_size=1,
        # one history in flight per actor: a whole history is heavy, and queueing several on one
        # actor would leave the others (and the nodes the autoscaler adds for them) idle
        compute=ray.data.ActorPoolStrategy(min_size=min(cfg.min_workers, len(rows)),
                                           max_size=min(cfg.workers, len(rows)), max_tasks_in_flight_per_actor=1),
        num_cpus=cfg.cpus_per_worker,
        num_gpus=cfg.gpus_per_worker or None,
    )
