"""Index speed and memory at 10k and 100k items: encode throughput, build time, search
throughput, recall of approximate indexes against exact search, bytes per item.

Figures are printed side by side with ratios to the exact FAISS index, since machines are
noisy; nothing is asserted.

    python benchmarks/retrieval_speed.py [--sizes 10000,100000] [--encode 2000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from mnemoray.index.embedder import Embedder
from mnemoray.index.lexical import BM25Index
from mnemoray.index.vector import VectorIndex

WORDS = ("memory persona session trip dinner sister project deadline wine course garden dog cat museum "
         "flight doctor piano budget marathon recipe birthday camera novel meeting coffee weekend").split()


def synthetic_texts(n: int, rng: np.random.Generator) -> list[str]:
    return [" ".join(rng.choice(WORDS, size=12)) + f" item {i}" for i in range(n)]


def clustered_unit_vectors(n: int, dim: int, rng: np.random.Generator, clusters: int = 256) -> np.ndarray:
    """Topic-like structure (as real sentence embeddings have), unlike uniform noise."""
    centers = rng.normal(size=(clusters, dim)).astype(np.float32)
    x = centers[rng.integers(0, clusters, n)] + 0.6 * rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def bench_encode(n: int) -> tuple[float, int]:
    embedder = Embedder()
    texts = synthetic_texts(n, np.random.default_rng(0))
    embedder.encode(texts[:64])  # warm-up
    start = time.perf_counter()
    embedder.encode(texts)
    return n / (time.perf_counter() - start), embedder.dim


def bench_vector(kind: str, base: np.ndarray, queries: np.ndarray, exact_ids: np.ndarray | None):
    import faiss

    index = VectorIndex(base.shape[1], kind=kind)
    start = time.perf_counter()
    index.add(base)
    index.search(queries[:1], 10)  # forces the (lazy) FAISS build
    build = time.perf_counter() - start
    start = time.perf_counter()
    _, ids = index.search(queries, 10)
    qps = len(queries) / (time.perf_counter() - start)
    recall = 1.0 if exact_ids is None else float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact_ids)]))
    mb = faiss.serialize_index(index._sync()).nbytes / 2**20
    return build, qps, recall, mb, ids


def bench_bm25(n: int, n_queries: int) -> tuple[float, float]:
    rng = np.random.default_rng(1)
    index = BM25Index()
    texts = synthetic_texts(n, rng)
    start = time.perf_counter()
    index.add(texts)
    index.search(["wine course"], 10)
    build = time.perf_counter() - start
    queries = [" ".join(rng.choice(WORDS, size=4)) for _ in range(n_queries)]
    start = time.perf_counter()
    index.search(queries, 10)
    return build, n_queries / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--encode", type=int, default=2000, help="texts to encode for the throughput figure")
    ap.add_argument("--queries", type=int, default=500)
    args = ap.parse_args()
    console = Console(width=160)
    rate, dim = bench_encode(args.encode)
    console.print(f"encode throughput (all-MiniLM-L6-v2, CPU, {args.encode} texts): {rate:.0f} texts/s; "
                  f"100k items would take {100_000 / rate / 60:.1f} min on this machine")
    table = Table(title="Vector and BM25 indexes (clustered synthetic unit vectors of the embedder's dim)")
    for head in ("items", "index", "build s", "queries/s", "qps ÷ flat", "recall@10 vs flat", "index MB"):
        table.add_column(head, no_wrap=True)
    rng = np.random.default_rng(0)
    for n in [int(x) for x in args.sizes.split(",")]:
        base = clustered_unit_vectors(n, dim, rng)
        queries = base[rng.choice(n, args.queries, replace=False)] + 0.05 * rng.normal(size=(args.queries, dim)).astype(
            np.float32
        )
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        build, flat_qps, _, mb, exact = bench_vector("flat", base, queries, None)
        table.add_row(str(n), "faiss flat (exact)", f"{build:.2f}", f"{flat_qps:.0f}", "1.00", "1.000", f"{mb:.0f}")
        for kind in ("hnsw", "ivf"):
            build, qps, recall, mb, _ = bench_vector(kind, base, queries, exact)
            table.add_row(
                str(n),
                f"faiss {kind}",
                f"{build:.2f}",
                f"{qps:.0f}",
                f"{qps / flat_qps:.2f}",
                f"{recall:.3f}",
                f"{mb:.0f}",
            )
        build, qps = bench_bm25(n, args.queries)
        table.add_row(str(n), "bm25s", f"{build:.2f}", f"{qps:.0f}", f"{qps / flat_qps:.2f}", "-", "-")
    console.print(table)


if __name__ == "__main__":
    main()
