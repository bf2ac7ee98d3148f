"""Shared fixtures: paths to the shared public data, a real embedder, one local Ray per module."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MNEMORAY_DATA", REPO.parent / "shared" / "data"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not DATA.is_dir():
        pytest.fail(f"shared data not found at {DATA}; set MNEMORAY_DATA")
    return DATA


@pytest.fixture(scope="session")
def embedder():
    from mnemoray.index.embedder import Embedder

    return Embedder()


@pytest.fixture(scope="module")
def ray_local():
    """One real local Ray per test module (starting Ray costs seconds)."""
    import ray

    from mnemoray.pipelines.ray_runtime import WORKER_ENV

    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, runtime_env={"env_vars": WORKER_ENV})
    yield ray
    ray.shutdown()
