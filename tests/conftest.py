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


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models on a shared 2-core box: extra torch threads only spin against each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny-model cache folder, filled once (the way `tiny:` configs use it)."""
    from mnemoray.llm.tiny import ensure_tiny

    cache = tmp_path_factory.mktemp("tiny-cache")
    ensure_tiny(cache, arch="qwen2", seed=0)
    return cache


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
