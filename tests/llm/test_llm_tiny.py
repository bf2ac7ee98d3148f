"""The tiny model is an ordinary, deterministic HF checkpoint that loads by path."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mnemoray.llm.tiny import HEAD_DIM, ensure_tiny, init_tiny


def file_hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_checkpoint_files_and_config(tiny_model: Path):
    names = {p.name for p in tiny_model.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "generation_config.json"} <= names
    config = json.loads((tiny_model / "config.json").read_text())
    assert config["model_type"] == "qwen2"
    assert config["hidden_size"] // config["num_attention_heads"] >= 64 and config["head_dim"] == HEAD_DIM
    tokenizer = AutoTokenizer.from_pretrained(tiny_model, local_files_only=True)
    gen = json.loads((tiny_model / "generation_config.json").read_text())
    assert gen["eos_token_id"] == tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.pad_token_id not in (None, tokenizer.eos_token_id)
    assert config["vocab_size"] == len(tokenizer)


def test_tokenizer_round_trips_json_and_chat(tiny_model: Path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model, local_files_only=True)
    text = '{"name": "Zoë", "age": 31, "tags": ["a\\nb", null, true, -2.5e3]}'
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert len(ids) < len(text.encode())  # BPE merges, not bytes only
    prompt = tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        tokenize=False, add_generation_prompt=True,
    )
    assert prompt == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    chat_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert chat_ids.count(tokenizer.convert_tokens_to_ids("<|im_start|>")) == 3


def test_same_seed_same_files_other_seed_other_weights(tiny_model: Path, tmp_path: Path):
    again = init_tiny(tmp_path / "again", seed=0)
    assert file_hashes(again) == file_hashes(tiny_model)
    other = file_hashes(init_tiny(tmp_path / "other", seed=1))
    assert other["model.safetensors"] != file_hashes(tiny_model)["model.safetensors"]
    assert other["tokenizer.json"] == file_hashes(tiny_model)["tokenizer.json"]


def test_llama_arch_loads_and_runs(tmp_path: Path):
    path = init_tiny(tmp_path / "llama", arch="llama", seed=3)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    assert model.config.model_type == "llama"
    ids = tokenizer("hello world", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], len(tokenizer))
    assert torch.isfinite(logits).all()


def test_ensure_tiny_builds_once_and_reuses(tiny_cache: Path, tiny_model: Path):
    first = ensure_tiny(tiny_cache, arch="qwen2", seed=0)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    second = ensure_tiny(tiny_cache, arch="qwen2", seed=0)
    assert second == first
    assert (second / "model.safetensors").stat().st_mtime_ns == stamp
    assert file_hashes(first) == file_hashes(tiny_model)
    assert [p.name for p in tiny_cache.iterdir()] == [first.name]  # no temp folders left behind
