"""Build the train/eval Ray Datasets the SFT workers stream from (`ray.train.get_dataset_shard`).

Files are parsed on the driver (cheap); tokenization runs as Ray Data tasks, so a large
trajectory log is tokenized in parallel on the cluster. Rejected samples are counted by
reason, and truncation is measured, before any worker starts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mnemoray.ids import stable_id
from mnemoray.train.config import SFTConfig, SFTData
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


def _tokenized(samples: list[dict[str, Any]], model_path: str, data: SFTData):
    import ray

    items = [{"where": s["where"], "messages_json": json.dumps(s["messages"], ensure_ascii=False)} for s in samples]
    ds = ray.data.from_items(items).map_batches(
        tokenize_batch, batch_size=256, batch_format="numpy",
        fn_kwargs={"model_path": model_path, "max_length": data.max_length,
                   "overlong": data.overlong, "train_on": data.train_on},
    )
    return ds.materialize()


def build_datasets(cfg: SFTConfig, model_path: str) -> tuple[Any, Any | None, DataStats]:
    """(train, eval or None, stats): materialized Ray Datasets of token rows, rejects counted."""
    stats = DataStats()
    train, evals = load_samples(cfg.data, stats.rejects)
    out: dict[str, Any] = {}
    for split, samples in (("train", train), ("eval", evals)):
        stats.samples[split] = len(samples)
        if not samples:
            continue
        ds = _tokenized(samples, model_path, cfg.data)
        meta = ds.select_columns(["reason", "where", "truncated_tokens", "n_tokens"]).to_pandas()
        for reason, where in zip(meta["reason"], meta["where"]):
            if reason:
                stats.rejects.add(reason, where)
        good = meta[meta["reason"] == ""]
        trunc = good["truncated_tokens"]
        stats.tokens[split] = int(good["n_tokens"].sum())
        stats.truncated_samples += int((trunc > 0).sum())
        stats.truncated_tokens += int(trunc.sum())
        ds = ds.filter(lambda row: row["reason"] == "").select_columns(["input_ids", "labels"])
        if cfg.data.packing:
            ds = ds.map_batches(pack_batch, batch_size=1024, batch_format="numpy",
                                fn_kwargs={"max_length": cfg.data.max_length})
        if split == "train":
            ds = ds.random_shuffle(seed=cfg.data.shuffle_seed)
        ds = ds.materialize()
        stats.rows[split] = ds.count()
        out[split] = ds if stats.rows[split] else None
    return out.get("train"), out.get("eval"), stats
