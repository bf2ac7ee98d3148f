"""The memory service under load, on loopback: search latency and throughput, add throughput.

Prints figures, asserts nothing. Starts `mnemoray serve memory` in its own process (its own
local Ray) once per embedder setting, preloads one tenant with `--sessions` sessions, then:

1. search: a bounded async load generator (AsyncMemoryClient, one connection pool) with
   8 / 32 / 128 concurrent clients, each sending searches back to back until `--searches`
   have been answered: p50 / p95 / p99 latency and requests per second, with the embedder
   batched (`@serve.batch`) and unbatched;
2. add: sessions per second with `rag-hybrid` (8 concurrent clients, distinct sessions),
   and with `dualmem` whose memory model is the instant fault endpoint (an
   OpenAI-compatible URL answering schema-valid JSON at once).

    python benchmarks/memory_service.py [--quick] [--clients 8,32,128] [--skip-unbatched] [--skip-dualmem]

Goal on 2 cores: search p95 <= 50 ms at 32 clients.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from mnemoray.client import AsyncMemoryClient
from mnemoray.ports import free_port

REPO = Path(__file__).resolve().parents[1]
ADMIN = "benchmark-admin-key-0123456789"
TOPICS = ["my dog Max", "the garden", "my sister in Lisbon", "the marathon", "piano lessons", "the new job",
          "my allergy to peanuts", "the trip to Kyoto", "our book club", "the broken bike"]


def session_turns(i: int) -> list[dict[str, str]]:
    topic = TOPICS[i % len(TOPICS)]
    return [{"speaker": "user", "text": f"Update {i} about {topic}: detail number {i * 7919 % 10007}."},
            {"speaker": "assistant", "text": f"Thanks for telling me about {topic} (note {i})."},
            {"speaker": "user", "text": f"Also, on day {i} I felt {['happy', 'tired', 'busy'][i % 3]}."},
            {"speaker": "assistant", "text": "Noted."}]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


@contextmanager
def service(folder: Path, extra_yaml: str):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "admin.key").write_text(ADMIN)
    config = folder / "memory.yaml"
    config.write_text(f"data_dir: {folder / 'data'}\nadmin_key_file: {folder / 'admin.key'}\n{extra_yaml}")
    port = free_port()
    log = (folder / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "mnemoray", "serve", "memory", "--config", str(config),
                             "--port", str(port)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(3000):
            if proc.poll() is not None:
                raise RuntimeError((folder / "serve.log").read_text()[-3000:])
            try:
                urllib.request.urlopen(f"{url}/healthz", timeout=5).read()
                break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)


def new_tenant(url: str, name: str, framework: str | None = None) -> str:
    body = {"tenant": name} | ({"framework": framework} if framework else {})
    req = urllib.request.Request(f"{url}/v1/admin/tenants", data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {ADMIN}"})
    return json.loads(urllib.request.urlopen(req, timeout=60).read())["api_key"]


async def add_sessions(url: str, key: str, ids: range, clients: int) -> float:
    """Sessions per second with `clients` concurrent writers."""
    queue = list(ids)
    async with AsyncMemoryClient(url, key, timeout_s=600) as client:
        async def worker() -> None:
            while queue:
                i = queue.pop()
                out = await client.add(session_turns(i), session_id=f"s{i}", date="1 June 2024")
                if out["status"] != "done":
                    raise RuntimeError(f"session s{i}: {out}")

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return len(ids) / (time.perf_counter() - start)


async def search_load(url: str, key: str, clients: int, total: int) -> dict[str, float]:
    latencies: list[float] = []
    sent = 0
    async with AsyncMemoryClient(url, key, timeout_s=600, max_connections=clients) as client:
        await client.search("warm up", 5)

        async def worker(w: int) -> None:
            nonlocal sent
            while sent < total:
                sent += 1
                q = f"what did I say about {TOPICS[(w + sent) % len(TOPICS)]}?"
                t0 = time.perf_counter()
                await client.search(q, 5)
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(clients)))
        wall = time.perf_counter() - start
    ms = [x * 1000 for x in latencies]
    return {"clients": clients, "n": len(ms), "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95),
            "p99_ms": percentile(ms, 99), "rps": len(ms) / wall}


def run_search(folder: Path, batching: bool, args) -> list[dict[str, float]]:
    yaml = f"memory: {{name: rag-hybrid}}\nembedder: {{batching: {str(batching).lower()}}}\n"
    with service(folder, yaml) as url:
        key = new_tenant(url, "bench")
        rate = asyncio.run(add_sessions(url, key, range(args.sessions), 8))
        print(f"  preload: {args.sessions} sessions, {rate:.1f} sessions/s (rag-hybrid, 8 writers)", flush=True)
        rows = []
        for clients in args.clients:
            row = asyncio.run(search_load(url, key, clients, args.searches))
            rows.append(row)
            print(f"  search batched={batching!s:5} clients={clients:4d}: p50 {row['p50_ms']:.1f} ms  "
                  f"p95 {row['p95_ms']:.1f} ms  p99 {row['p99_ms']:.1f} ms  {row['rps']:.0f} req/s", flush=True)
        return rows


def run_dualmem(folder: Path, n: int) -> float:
    port = free_port()
    fault = subprocess.Popen([sys.executable, "-m", "mnemoray.llm.fault_server", "--port", str(port)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2).read()
                break
            except OSError:
                time.sleep(0.1)
        (folder / "llm.yaml").write_text(
            f"engine: openai\nmodel: fault-model\nbase_url: http://127.0.0.1:{port}/v1\nmax_retries: 0\n")
        with service(folder, f"llm: {folder / 'llm.yaml'}\nmemory: {{name: dualmem}}\n") as url:
            key = new_tenant(url, "bench-dualmem", "dualmem")
            return asyncio.run(add_sessions(url, key, range(n), 8))
    finally:
        fault.send_signal(signal.SIGTERM)
        fault.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sessions and searches")
    parser.add_argument("--clients", default="8,32,128")
    parser.add_argument("--sessions", type=int, default=None)
    parser.add_argument("--searches", type=int, default=None)
    parser.add_argument("--skip-unbatched", action="store_true")
    parser.add_argument("--skip-dualmem", action="store_true")
    args = parser.parse_args()
    args.clients = [int(c) for c in args.clients.split(",")]
    args.sessions = args.sessions or (100 if args.quick else 500)
    args.searches = args.searches or (400 if args.quick else 2000)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    print(f"memory service on {os.cpu_count()} CPUs, loopback; {args.sessions} sessions preloaded, "
          f"{args.searches} searches per level", flush=True)
    with tempfile.TemporaryDirectory(prefix="memory-bench-") as tmp:
        results = {"batched": run_search(Path(tmp) / "batched", True, args)}
        if not args.skip_unbatched:
            results["unbatched"] = run_search(Path(tmp) / "unbatched", False, args)
        if not args.skip_dualmem:
            n = 20 if args.quick else 100
            rate = run_dualmem(Path(tmp) / "dualmem", n)
            results["dualmem_sessions_per_s"] = rate
            print(f"  add: dualmem on the instant endpoint: {rate:.1f} sessions/s ({n} sessions, 8 writers)")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
