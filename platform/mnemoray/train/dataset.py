"""SFT samples as token rows: reading the train/eval samples, tokenizing and packing a
batch, and the statistics of what was rejected and truncated (plain Python, no Ray; the Ray
Data pipeline is `mnemoray.distributed.train.sft_data`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mnemoray.config.train import SFTData
from mnemoray.ids import stable_id
from mnemoray.train.formats import BadSample, Rejects, read_samples
from mnemoray.train.tokenize import Encoded, encode_chat, pack

_TOKENIZERS: dict[str, Any] = {}


def _tokenizer(path: str) -> Any:
    if path not in _TOKENIZERS:
        from transformers import AutoTokenizer

        _TOKENIZERS[path] = AutoTokenizer.from_pretrained(path)
    return _TOKENIZERS[path]


def tokenize_batch(batch: dict[str, Any], model_path: str, max_length: int, overlong: str,
                   train_on: str) -> dict[str, list[Any]]:
    """Ray Data map_batches function: one output row per input row, `reason` empty when it is usable."""
    tok = _tokenizer(model_path)
    out: dict[str, list[Any]] = {"input_ids": [], "labels": [], "reason": [], "where": [], "truncated_tokens": [],
                                  "n_tokens": []}
    for where, messages_json in zip(batch["where"], batch["messages_json"]):
        try:
            enc = encode_chat(tok, json.loads(messages_json), max_length, overlong, train_on)
            out["input_ids"].append(enc.input_ids)
            out["labels"].append(enc.labels)
            out["reason"].append("")
            out["truncated_tokens"].append(enc.truncated_tokens)
            out["n_tokens"].append(len(enc.input_ids))
        except BadSample as err:
            out["input_ids"].append([])
            out["labels"].append([])
            out["reason"].append(str(err))
            out["truncated_tokens"].append(0)
            out["n_tokens"].append(0)
        out["where"].append(str(where))
    return out


def pack_batch(batch: dict[str, Any], max_length: int) -> dict[str, list[Any]]:
    rows = [Encoded(list(i), list(lab)) for i, lab in zip(batch["input_ids"], batch["labels"])]
    packed = pack(rows, max_length)
    return {k: [b[k] for b in packed] for k in ("input_ids", "labels", "position_ids")}


@dataclass
class DataStats:
    """What went in, what was rejected and why, and how much truncation cost."""

    rows: dict[str, int] = field(default_factory=dict)
    samples: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    truncated_samples: int = 0
    truncated_tokens: int = 0
    rejects: Rejects = field(default_factory=Rejects)

    def as_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "rows": self.rows, "tokens": self.tokens,
                "truncated_samples": self.truncated_samples, "truncated_tokens": self.truncated_tokens,
                "rejected": self.rejects.as_dict()}


def load_samples(data: SFTData, rejects: Rejects) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Train and eval samples; without eval files a deterministic eval_fraction is held out."""
    train = [s for src in data.train for s in read_samples(src.path, src.format, rejects)]
    if data.eval:
        evals = [s for src in data.eval for s in read_samples(src.path, src.format, rejects)]
        return train, evals
    if data.eval_fraction == 0:
        return train, []
    buckets = 10_000
    cut = int(data.eval_fraction * buckets)

    def held_out(s: dict[str, Any]) -> bool:
        return int(stable_id(s["messages"], data.shuffle_seed), 16) % buckets < cut

    return [s for s in train if not held_out(s)], [s for s in train if held_out(s)]
