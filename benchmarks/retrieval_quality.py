"""Retrieval quality of the LLM-free baselines on the shared LoCoMo and RealMem samples.

Prints one table (dataset × memory × chunking) of recall_any@k, recall_all@k and NDCG@k,
with the same harness and protocols as `mnemoray eval retrieval` (plain Python here: the
figures do not depend on Ray).

    python benchmarks/retrieval_quality.py [--data ../shared/data] [--chunkings pair,turn,session]
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mnemoray.config import DEFAULT_DATA_ROOT, IndexConfig, MemoryConfig
from mnemoray.eval.metrics import mean_metrics
from mnemoray.eval.retrieval import evaluate_sample
from mnemoray.index.embedder import Embedder
from mnemoray.loaders import load_dataset
from mnemoray.memory import build_memory

RECENCY = {"locomo": 0.0, "realmem": 1.0}  # as in configs/eval/retrieval_local.yaml


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA_ROOT)
    ap.add_argument("--datasets", default="locomo,realmem")
    ap.add_argument("--memories", default="rag-dense,rag-bm25,rag-hybrid")
    ap.add_argument("--chunkings", default="pair")
    ap.add_argument("--k", default="5,10,20")
    args = ap.parse_args()
    ks = [int(x) for x in args.k.split(",")]
    embedder = Embedder()
    table = Table(title="Retrieval quality (k = distinct evidence units)")
    cols = [f"{m}@{k}" for k in ks for m in ("recall_any", "recall_all", "ndcg") if k == 10] + [
        f"recall_any@{ks[0]}",
        f"recall_all@{ks[-1]}",
    ]
    for head in ("dataset", "memory", "chunking", "queries", *cols, "seconds"):
        table.add_column(head, no_wrap=True)
    for dataset in args.datasets.split(","):
        samples, _ = load_dataset(dataset, args.data / dataset)
        for chunking in args.chunkings.split(","):
            for name in args.memories.split(","):
                index = IndexConfig(recency_weight=RECENCY.get(dataset, 0.0) if name == "rag-hybrid" else 0.0)
                cfg = MemoryConfig(name=name, chunking=chunking, index=index)
                start = time.perf_counter()
                extra = {"embedder": embedder} if name != "rag-bm25" else {}
                rows = [r for s in samples for r in evaluate_sample(s, partial(build_memory, cfg, **extra), ks)]
                m = mean_metrics([r["metrics"] for r in rows])
                table.add_row(dataset, name, chunking, str(len(rows)), *[f"{m[c]:.3f}" for c in cols],
                              f"{time.perf_counter() - start:.1f}")
    Console(width=180).print(table)


if __name__ == "__main__":
    main()
