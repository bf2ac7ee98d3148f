"""The vllm engine is optional: without the package it says what to install."""

from __future__ import annotations

import sys

import pytest

from mnemoray.llm.vllm_engine import VLLMEngine


def test_missing_vllm_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError, installed or not
    with pytest.raises(RuntimeError, match=r"needs the vllm package: pip install .mnemoray\[gpu\]."):
        VLLMEngine("some/model")
