"""Tokenization (loss on assistant tokens only), truncation, packing, padding; config and schedule."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch

from mnemoray.config import ConfigError, load_config
from mnemoray.config.train import SFTConfig
from mnemoray.train.ds_config import deepspeed_config, lr_factor, total_steps
from mnemoray.train.formats import BadSample
from mnemoray.train.tokenize import IGNORE, Encoded, collate, encode_chat, epoch_order, held_batches, pack

CHAT = [
    {"role": "system", "content": "You keep memories."},
    {"role": "user", "content": "I have a dog."},
    {"role": "assistant", "content": "Noted: dog."},
    {"role": "user", "content": "And a cat."},
    {"role": "assistant", "content": "Noted: cat."},
]


def _trained_text(tok, enc: Encoded) -> str:
    return tok.decode([t for t, lab in zip(enc.input_ids, enc.labels) if lab != IGNORE])


def test_ids_match_the_chat_template_and_only_assistant_parts_are_labelled(tokenizer):
    enc = encode_chat(tokenizer, CHAT, max_length=512)
    assert tokenizer.decode(enc.input_ids) == tokenizer.apply_chat_template(CHAT, tokenize=False)
    assert _trained_text(tokenizer, enc) == "Noted: dog.<|im_end|>\nNoted: cat.<|im_end|>\n"
    assert enc.truncated_tokens == 0
    last = encode_chat(tokenizer, CHAT, max_length=512, train_on="last_assistant")
    assert last.input_ids == enc.input_ids
    assert _trained_text(tokenizer, last) == "Noted: cat.<|im_end|>\n"


def test_truncation_is_measured_and_drop_mode_rejects(tokenizer):
    full = encode_chat(tokenizer, CHAT, max_length=512)
    n = len(full.input_ids)
    cut = encode_chat(tokenizer, CHAT, max_length=n - 3)
    assert len(cut.input_ids) == n - 3 and cut.truncated_tokens == 3
    assert cut.labels == full.labels[: n - 3]
    with pytest.raises(BadSample, match="longer than max_length"):
        encode_chat(tokenizer, CHAT, max_length=n - 3, overlong="drop")
    # cut before the first answer: nothing left to learn
    with pytest.raises(BadSample, match="no assistant tokens within max_length"):
        encode_chat(tokenizer, CHAT, max_length=12)


def test_packing_keeps_samples_apart(tokenizer):
    rows = [encode_chat(tokenizer, CHAT[1:3], 64), encode_chat(tokenizer, CHAT[3:5], 64),
            encode_chat(tokenizer, CHAT, 64)]
    lengths = [len(r.input_ids) for r in rows]
    packed = pack(rows, max_length=max(lengths[0] + lengths[1], lengths[2]))
    assert sum(len(b["input_ids"]) for b in packed) == sum(lengths)
    assert len(packed) == 2
    for b in packed:
        starts = [i for i, p in enumerate(b["position_ids"]) if p == 0]
        assert all(b["position_ids"][i] == i - max(s for s in starts if s <= i) for i in range(len(b["input_ids"])))
    batch = collate({k: [b[k] for b in packed] for k in ("input_ids", "labels", "position_ids")},
                    pad_id=tokenizer.pad_token_id)
    assert "attention_mask" not in batch  # restarting positions mark the samples instead
    # padding restarts its own positions, so it is never part of the last sample
    short = 0 if len(packed[0]["input_ids"]) < len(packed[1]["input_ids"]) else 1
    pad_start = len(packed[short]["input_ids"])
    assert batch["position_ids"][short, pad_start] == 0
    assert (batch["labels"][short, pad_start:] == IGNORE).all()


def test_packed_samples_do_not_attend_to_each_other(tiny_model: Path, tokenizer):
    """Each sample's logits inside a packed row equal its logits when run alone."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    packed = pack([encode_chat(tokenizer, CHAT[1:3], 64), encode_chat(tokenizer, CHAT[3:5], 64)], 128)
    assert len(packed) == 1
    row = packed[0]
    starts = [i for i, p in enumerate(row["position_ids"]) if p == 0] + [len(row["input_ids"])]
    assert len(starts) == 3
    with torch.no_grad():
        batch = collate({k: [row[k]] for k in row}, tokenizer.pad_token_id)
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        for lo, hi in itertools.pairwise(starts):
            alone = model(input_ids=torch.tensor([row["input_ids"][lo:hi]])).logits[0]
            assert torch.allclose(logits[lo:hi], alone, atol=1e-4)


def test_collate_pads_right_with_mask(tokenizer):
    batch = collate({"input_ids": [[5, 6, 7], [8]], "labels": [[IGNORE, 6, 7], [8]]}, pad_id=tokenizer.pad_token_id)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, tokenizer.pad_token_id, tokenizer.pad_token_id]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"][1].tolist() == [8, IGNORE, IGNORE]
    assert batch["num_tokens"] == 4


def test_held_batches_collate_in_order_and_drop_the_partial_tail():
    rows = [{"input_ids": [i] * (1 + i % 3), "labels": [i] * (1 + i % 3), "position_ids": list(range(1 + i % 3))}
            for i in range(7)]
    batches = list(held_batches(rows, 3, pad_id=0))
    assert len(batches) == 2  # 7 rows, micro 3: the last row waits for the next epoch's order
    for batch, start in zip(batches, (0, 3)):
        expected = collate({k: [r[k] for r in rows[start:start + 3]] for k in rows[0]}, 0)
        assert batch.keys() == expected.keys() and "position_ids" in batch
        assert all(torch.equal(batch[k], expected[k]) for k in batch if k != "num_tokens")
        assert batch["num_tokens"] == expected["num_tokens"]


def test_each_epoch_has_its_own_fixed_order():
    first, second, third = (epoch_order(50, seed=7, epoch=e) for e in (0, 1, 2))
    assert first == list(range(50))  # epoch 0: the order the seeded global shuffle left
    assert sorted(second) == sorted(third) == first  # permutations: every row once
    assert second != first and third != second
    assert epoch_order(50, seed=7, epoch=1) == second  # a resume replays the same order
    assert epoch_order(50, seed=8, epoch=1) != second


def test_held_batches_follow_the_epoch_order():
    rows = [{"input_ids": [i], "labels": [i]} for i in range(6)]
    order = [5, 3, 1, 0, 2, 4]
    firsts = [b["input_ids"][:, 0].tolist() for b in held_batches(rows, 2, pad_id=0, order=order)]
    assert firsts == [[5, 3], [1, 0], [2, 4]]


def test_lr_warmup_then_cosine_to_floor():
    f = [lr_factor(s, total_steps=100, warmup_steps=10, min_ratio=0.1) for s in range(101)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[10] == pytest.approx(1.0) and f[100] == pytest.approx(0.1)
    assert f[55] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert all(f[i] >= f[i + 1] for i in range(10, 100))


def _cfg(tmp_path: Path, *overrides: str) -> SFTConfig:
    return load_config(SFTConfig, "configs/train/sft_local.yaml", [f"out={tmp_path}", *overrides])


def test_local_and_cluster_configs_validate(tmp_path: Path):
    local = _cfg(tmp_path)
    conf = deepspeed_config(local, world_size=2)
    assert conf["zero_optimization"]["stage"] == 2 and conf["bf16"]["enabled"] is False
    assert conf["optimizer"]["params"]["torch_adam"] is True
    assert conf["train_batch_size"] == 8 * 1 * 2
    cluster = load_config(SFTConfig, "configs/train/sft_cluster.yaml")
    cconf = deepspeed_config(cluster, world_size=cluster.ray.workers)
    assert cconf["zero_optimization"]["stage"] == 3 and cconf["bf16"]["enabled"] is True
    assert cluster.ray.workers == 8 and cluster.ray.use_gpu


def test_extra_deepspeed_keys_merge_last(tmp_path: Path):
    cfg = _cfg(tmp_path, "deepspeed.extra={zero_optimization: {reduce_bucket_size: 1000}, steps_per_print: 5}")
    conf = deepspeed_config(cfg, 2)
    assert conf["zero_optimization"] == {"stage": 2, "reduce_bucket_size": 1000}
    assert conf["steps_per_print"] == 5


@pytest.mark.parametrize("override, message", [
    ("deepspeed.dtype=fp16", "fp16 is not supported on CPU"),
    ("deepspeed.offload_param=cpu", "offload_param needs deepspeed.zero_stage=3"),
    ("ray.use_gpu=true", "needs ray.accelerator=cuda"),
    ("model.path=/some/model", "exactly one of 'path' or 'tiny'"),
    ("deepspeed.zero_stage=4", "deepspeed.zero_stage"),
    ("schedule.micro_batch_size=0", "schedule.micro_batch_size"),
    ("name=has space", "name"),
    ("data.train=[]", "data.train"),
    ("schedule.bogus=1", "schedule.bogus"),
])
def test_bad_config_names_the_problem(tmp_path: Path, override: str, message: str):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        _cfg(tmp_path, override)


def test_total_steps_from_epochs_and_too_little_data(tmp_path: Path):
    cfg = _cfg(tmp_path, "schedule.max_steps=null", "schedule.epochs=2", "schedule.grad_accum=2")
    assert total_steps(cfg, train_rows=100, world_size=2) == 2 * (100 // 32)
    with pytest.raises(ValueError, match="cannot fill one step"):
        total_steps(cfg, train_rows=20, world_size=2)
