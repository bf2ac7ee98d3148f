"""Shared fixtures for the SFT tests: the tiny model, the copy task, one thread per torch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from mnemoray.llm.tiny import ensure_tiny

os.environ.setdefault("DS_ACCELERATOR", "cpu")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("tiny-cache")
    ensure_tiny(cache, arch="qwen2", seed=0)
    return cache


@pytest.fixture(scope="session")
def tiny_model(tiny_cache: Path) -> Path:
    return ensure_tiny(tiny_cache, arch="qwen2", seed=0)


@pytest.fixture(scope="session")
def tokenizer(tiny_model: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)
