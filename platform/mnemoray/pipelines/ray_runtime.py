"""Start or join Ray once per process, with quiet defaults suited to a laptop or a cluster."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from mnemoray.config import RayConfig

# Workers load models from local paths only and keep their logs short.
WORKER_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
}


@contextlib.contextmanager
def ray_session(cfg: RayConfig) -> Iterator[None]:
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
            ray.init(num_cpus=cfg.num_cpus, include_dashboard=False, **kwargs)
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
