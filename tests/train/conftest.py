"""Shared fixtures for the SFT tests: the tiny model, the copy task, one thread per torch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from mnemoray.llm.tiny import ensure_tiny

os.environ.setdefault("DS_ACCELERATOR", "cpu")


@pytest.fixture(scope="session")
def tiny_model(tiny_cache: Path) -> Path:
    return ensure_tiny(tiny_cache, arch="qwen2", seed=0)


@pytest.fixture(scope="session")
def tokenizer(tiny_model: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)
