"""The train/eval Ray Datasets the SFT workers stream from (`ray.train.get_dataset_shard`).

Files are parsed on the driver (cheap); tokenization runs as Ray Data tasks, so a large
trajectory log is tokenized in parallel on the cluster. Rejected samples are counted by
reason, and truncation is measured, before any worker starts.
"""

from __future__ import annotations

import json
from typing import Any

import ray

from mnemoray.config.train import SFTConfig, SFTData
from mnemoray.train.dataset import DataStats, load_samples, pack_batch, tokenize_batch


def _tokenized(samples: list[dict[str, Any]], model_path: str, data: SFTData):
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
