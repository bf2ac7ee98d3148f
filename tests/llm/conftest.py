"""Shared fixtures: one tiny model (built once per session) and one engine loaded from it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mnemoray.llm.hf_engine import HFEngine
from mnemoray.llm.tiny import init_tiny


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_tiny(tmp_path_factory.mktemp("tiny") / "qwen2-seed0", arch="qwen2", seed=0)


@pytest.fixture(scope="session")
def engine(tiny_model: Path) -> HFEngine:
    torch.set_num_threads(1)
    return HFEngine(str(tiny_model), batch_size=4)
