"""The memory service under load, on loopback: search latency and throughput, add throughput.

Prints figures, asserts nothing. Starts `mnemoray serve memory` in its own process (its own
local Ray) once per embedder setting, preloads one tenant with `--sessions` sessions, then:

1. search: a bounded async load generator (AsyncMemoryClient, one connection pool) with
   8 / 32 / 128 concurrent clients, each sending searches back to back until `--searches`
   have been answered: p50 / p95 / p99 latency and requests per second, with query encodes
   batched (shared forward passes) and unbatched;
2. add: sessions per second with `rag-hybrid` (8 concurrent clients, distinct sessions),
   and with `dualmem` whose memory model is the instant fault endpoint (an
   OpenAI-compatible URL answering schema-valid JSON at once);
3. peer: mem0 in process (benchmarks/peers/mem0_memory.py in .venv-bench-mem0/, made by
   scripts/setup_bench_mem0.sh; `infer=False`, the same MiniLM, FAISS) doing the same adds
   and the same searches (one fixed query list) at the same concurrency, after the service
   has stopped (adds on one thread: mem0's FAISS store fails to save under concurrent adds);
   printed side by side with ratios (with `--profile` also CPU ms per search). Skipped with a
   note when that venv is absent.

    python benchmarks/memory_service.py [--quick] [--clients 8,32,128] [--skip-unbatched] [--skip-dualmem]
                                        [--skip-mem0] [--before] [--steps] [--profile] [--extra YAML]

`--before` also runs the previous layout in the same run (proxy -> ingress -> `MemoryStore`
deployment -> `Embedder` deployment: `store_placement: deployment`, `embedder.placement:
deployment`, Serve's access log on) and prints before/after ratios; `--steps` adds the step
between (the encoder inside the `MemoryStore` deployment, access log off). The default
layout serves a search in one replica: the store inside the ingress, the encoder inside the
store. `--profile` prints the CPU each search costs in each process (Serve's proxy, ingress,
store, embedder, the rest of Ray, this load generator).

Goal on 2 cores: search p95 <= 50 ms at 32 clients. Closed-loop clients wait clients /
throughput on average, so that needs > 640 req/s: under 3.2 ms of CPU per search with both
cores free, while a MiniLM query encode alone took 3.7 ms of CPU in batches of 32 (17 ms
alone) on this loaded 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
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


def queries(n: int = 100) -> list[str]:
    """The search workload: the same list, in the same order, for the service and for mem0."""
    return [f"what did I say about {TOPICS[(i * 3) % len(TOPICS)]} on day {i}?" for i in range(n)]


K = 5


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
        yield url, proc
    except Exception:
        print(f"  service log (tail):\n{(folder / 'serve.log').read_text()[-4000:]}", flush=True)
        raise
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
        await client.search("warm up", K)

        asked = queries()

        async def worker() -> None:
            nonlocal sent
            while sent < total:
                q = asked[sent % len(asked)]
                sent += 1
                t0 = time.perf_counter()
                await client.search(q, K)
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - start
    ms = [x * 1000 for x in latencies]
    return {"clients": clients, "n": len(ms), "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95),
            "p99_ms": percentile(ms, 99), "rps": len(ms) / wall}


def arrival_times(rate: float, n: int, seed: int = 0) -> list[float]:
    """Poisson arrivals (seconds after the start) of an open-loop load at `rate` searches/s."""
    rng, t, out = random.Random(seed), 0.0, []
    for _ in range(n):
        t += rng.expovariate(rate)
        out.append(t)
    return out


async def paced_search(url: str, key: str, rate: float, clients: int, seconds: float) -> dict[str, float]:
    """Open loop: searches arrive at `rate` per second (Poisson) whatever the answers do, at
    most `clients` in flight; a latency counts from the scheduled arrival, so time spent
    waiting for a free client is in it (no coordinated omission)."""
    latencies: list[float] = []
    async with AsyncMemoryClient(url, key, timeout_s=600, max_connections=clients) as client:
        await client.search("warm up", K)
        asked, gate = queries(), asyncio.Semaphore(clients)
        times = arrival_times(rate, max(1, round(rate * seconds)))
        start = time.perf_counter()

        async def one(i: int, at: float) -> None:
            await asyncio.sleep(max(0.0, start + at - time.perf_counter()))
            async with gate:
                await client.search(asked[i % len(asked)], K)
            latencies.append(time.perf_counter() - (start + at))

        await asyncio.gather(*(one(i, at) for i, at in enumerate(times)))
        wall = time.perf_counter() - start
    ms = [x * 1000 for x in latencies]
    return {"offered_rps": rate, "clients": clients, "n": len(ms), "p50_ms": percentile(ms, 50),
            "p95_ms": percentile(ms, 95), "p99_ms": percentile(ms, 99), "rps": len(ms) / wall}


def run_paced(folder: Path, args, extra: str = "") -> list[dict]:
    """The default layout (batched encoder; plus `extra` YAML lines) under each offered rate of `--rates`."""
    yaml = "memory: {name: rag-hybrid}\nembedder: {batching: true}\n"
    if extra:
        yaml += extra.replace("\\n", "\n") + "\n"
    with service(folder, yaml) as (url, _):
        key = new_tenant(url, "bench")
        asyncio.run(add_sessions(url, key, range(args.sessions), 8))
        rows = []
        for rate in args.rates:
            row = asyncio.run(paced_search(url, key, rate, args.paced_clients, args.paced_seconds))
            rows.append(row)
            label = " (extra)" if extra else ""
            print(f"  paced search{label} {rate:6.0f}/s offered, <= {args.paced_clients} in flight: "
                  f"p50 {row['p50_ms']:.1f} ms  p95 {row['p95_ms']:.1f} ms  p99 {row['p99_ms']:.1f} ms  "
                  f"{row['rps']:.0f} req/s answered", flush=True)
        return rows


def highest_rate_within(rows: list[dict], p95_ms: float) -> float | None:
    ok = [r["offered_rps"] for r in rows if r["p95_ms"] <= p95_ms]
    return max(ok) if ok else None


def paced_side_by_side(service_rows: list[dict], mem0_rows: list[dict] | None, goal_ms: float = 50.0) -> None:
    """Latency against offered load, service and mem0 at the same rates."""
    peer = {r["offered_rps"]: r for r in mem0_rows or []}
    print(f"\n  open loop (Poisson arrivals, at most {service_rows[0]['clients']} in flight; latency from the "
          "scheduled arrival)")
    print("  offered/s | service p50 / p95 / p99 ms, answered/s | mem0 p50 / p95 / p99 ms, answered/s | "
          "p95 mem0/service")
    for row in service_rows:
        m = peer.get(row["offered_rps"])
        theirs = (f"{m['p50_ms']:6.1f} {m['p95_ms']:6.1f} {m['p99_ms']:6.1f} {m['rps']:6.0f} | "
                  f"{m['p95_ms'] / row['p95_ms']:16.2f}") if m else "-"
        print(f"  {row['offered_rps']:9.0f} | {row['p50_ms']:6.1f} {row['p95_ms']:6.1f} {row['p99_ms']:6.1f} "
              f"{row['rps']:6.0f} | {theirs}")
    ours, theirs = highest_rate_within(service_rows, goal_ms), highest_rate_within(mem0_rows or [], goal_ms)
    print(f"  highest offered rate with p95 <= {goal_ms:g} ms: service {ours if ours is not None else 'none'}/s"
          + (f", mem0 {theirs if theirs is not None else 'none'}/s" if mem0_rows else ""))


def cpu_by_process(root: int) -> dict[str, float]:
    """CPU seconds (user + system) so far of the service's processes, by role: Serve's proxy,
    each deployment's replicas, the rest of Ray; plus this load generator."""
    import psutil

    out: dict[str, float] = {}
    procs = [psutil.Process(root)]
    procs += procs[0].children(recursive=True)
    for proc in procs:
        try:
            title = " ".join(proc.cmdline())[:200]
            times = proc.cpu_times()
        except psutil.Error:
            continue
        role = next((name for name in ("ProxyActor", "MemoryIngress", "MemoryStore", "Embedder", "MemoryModel",
                                       "ServeController") if name in title), "other Ray")
        out[role] = out.get(role, 0.0) + times.user + times.system
    me = psutil.Process().cpu_times()
    out["load generator"] = me.user + me.system
    return out


def print_profile(before: dict[str, float], after: dict[str, float], n: int) -> float:
    """Prints CPU ms per search by process; returns the service's total (load generator excluded)."""
    used = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    total = sum(used.values())
    shown = ", ".join(f"{k} {v / n * 1000:.1f}" for k, v in sorted(used.items(), key=lambda kv: -kv[1]) if v > 0)
    print(f"    CPU ms per search: {shown} (total {total / n * 1000:.1f})", flush=True)
    return (total - used.get("load generator", 0.0)) / n * 1000


LAYOUTS = {  # name -> (embedder settings, top-level settings); None: the service's defaults
    "before": (", placement: deployment", "store_placement: deployment\naccess_log: true\n"),
    "encoder in store": ("", "store_placement: deployment\n"),
}


def run_search(folder: Path, batching: bool, args, layout: str | None = None) -> tuple[list[dict], float]:
    """Search rows per level, and the preload's add rate (sessions/s). `layout`: a key of
    LAYOUTS (None: the service's default layout)."""
    embedder, top = LAYOUTS[layout] if layout in LAYOUTS else ("", "")
    yaml = f"memory: {{name: rag-hybrid}}\nembedder: {{batching: {str(batching).lower()}{embedder}}}\n{top}"
    if layout == "extra":
        yaml += args.extra.replace("\\n", "\n") + "\n"
    with service(folder, yaml) as (url, proc):
        key = new_tenant(url, "bench")
        rate = asyncio.run(add_sessions(url, key, range(args.sessions), 8))
        print(f"  preload: {args.sessions} sessions, {rate:.1f} sessions/s (rag-hybrid, 8 writers)", flush=True)
        rows = []
        for clients in args.clients:
            before = cpu_by_process(proc.pid) if args.profile else {}
            row = asyncio.run(search_load(url, key, clients, args.searches))
            rows.append(row)
            label = f"batched={batching!s:5}" + (f" {layout}" if layout else "")
            print(f"  search {label} clients={clients:4d}: p50 {row['p50_ms']:.1f} ms  "
                  f"p95 {row['p95_ms']:.1f} ms  p99 {row['p99_ms']:.1f} ms  {row['rps']:.0f} req/s", flush=True)
            if args.profile:
                row["cpu_ms_per_search"] = print_profile(before, cpu_by_process(proc.pid), row["n"])
        return rows, rate


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
        with service(folder, f"llm: {folder / 'llm.yaml'}\nmemory: {{name: dualmem}}\n") as (url, _):
            key = new_tenant(url, "bench-dualmem", "dualmem")
            return asyncio.run(add_sessions(url, key, range(n), 8))
    finally:
        fault.send_signal(signal.SIGTERM)
        fault.wait(timeout=30)


MEM0_PYTHON = REPO / ".venv-bench-mem0" / "bin" / "python"


def run_mem0(folder: Path, args) -> dict | None:
    """The peer in its own venv and process; None (with a note) when that venv is missing."""
    if not MEM0_PYTHON.exists():
        print(f"  mem0: skipped ({MEM0_PYTHON.relative_to(REPO)} missing: run scripts/setup_bench_mem0.sh)")
        return None
    folder.mkdir(parents=True, exist_ok=True)
    workload = folder / "workload.json"
    workload.write_text(json.dumps({"sessions": [{"session_id": f"s{i}", "turns": session_turns(i)}
                                                 for i in range(args.sessions)], "queries": queries(), "k": K}))
    out = folder / "mem0.json"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    subprocess.run([str(MEM0_PYTHON), str(REPO / "benchmarks" / "peers" / "mem0_memory.py"), "--workload",
                    str(workload), "--clients", ",".join(map(str, args.clients)), "--searches", str(args.searches),
                    "--writers", str(args.mem0_writers), "--out", str(out)]
                   + (["--rates", ",".join(f"{r:g}" for r in args.rates), "--paced-clients", str(args.paced_clients),
                       "--paced-seconds", str(args.paced_seconds)] if args.rates else []),
                   check=True, env=env | {"MEM0_TELEMETRY": "false"})
    return json.loads(out.read_text())


def before_after(before: list[dict], after: list[dict], name: str = "before -> after") -> None:
    """A previous layout (before) and the default (after: one replica serves a search)."""
    print(f"\n  {name}")
    print("  clients | p95 ms before -> after | req/s before -> after | p95 before/after | req/s after/before")
    for b, a in zip(before, after):
        print(f"  {a['clients']:7d} | {b['p95_ms']:7.1f} -> {a['p95_ms']:7.1f} | {b['rps']:6.0f} -> {a['rps']:6.0f} | "
              f"{b['p95_ms'] / a['p95_ms']:16.2f} | {a['rps'] / b['rps']:18.2f}")


def side_by_side(service_rows: list[dict], add_rate: float, mem0: dict) -> None:
    """Service vs mem0 at each level; ratios > 1 favour the service (mem0 latency / service latency,
    service throughput / mem0 throughput)."""
    print("\n  clients | service p50 / p95 / p99 ms, req/s | mem0 p50 / p95 / p99 ms, req/s | "
          "p95 mem0/service | req/s service/mem0")
    peer = {r["clients"]: r for r in mem0["search"]}
    for row in service_rows:
        m = peer.get(row["clients"])
        if m is None:
            continue
        print(f"  {row['clients']:7d} | {row['p50_ms']:6.1f} {row['p95_ms']:6.1f} {row['p99_ms']:6.1f} "
              f"{row['rps']:6.0f} | {m['p50_ms']:6.1f} {m['p95_ms']:6.1f} {m['p99_ms']:6.1f} {m['rps']:6.0f} | "
              f"{m['p95_ms'] / row['p95_ms']:16.2f} | {row['rps'] / m['rps']:18.2f}")
    if any("cpu_ms_per_search" in r for r in service_rows):
        print("  CPU ms per search (service: its processes, load generator excluded; mem0: its process, "
              "load threads included):")
        for row in service_rows:
            m = peer.get(row["clients"])
            if m is not None and "cpu_ms_per_search" in row and "cpu_ms_per_search" in m:
                ours, theirs = row["cpu_ms_per_search"], m["cpu_ms_per_search"]
                print(f"  {row['clients']:7d} | service {ours:5.1f} | mem0 {theirs:5.1f} | mem0/service "
                      f"{theirs / ours:.2f}")
    a = mem0["add"]
    print(f"  add: service {add_rate:.1f} sessions/s (8 writers), mem0 {a['sessions_per_s']:.1f} sessions/s "
          f"({a['writers']} writers, {a['items']} items = one per message, {a['logged_errors']} errors logged): "
          f"service/mem0 {add_rate / a['sessions_per_s']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sessions and searches")
    parser.add_argument("--clients", default="8,32,128")
    parser.add_argument("--sessions", type=int, default=None)
    parser.add_argument("--searches", type=int, default=None)
    parser.add_argument("--skip-unbatched", action="store_true")
    parser.add_argument("--skip-dualmem", action="store_true")
    parser.add_argument("--skip-mem0", action="store_true", help="no mem0 peer run")
    parser.add_argument("--profile", action="store_true", help="CPU per search by process (proxy, deployments, ...)")
    parser.add_argument("--before", action="store_true",
                        help="also run the previous layout (store and embedder deployments, access log on)")
    parser.add_argument("--extra", default="", help="also run the default layout with these YAML lines added "
                        "to its service config (\\n between lines), e.g. 'ingress: {num_cpus: 1}'")
    parser.add_argument("--steps", action="store_true",
                        help="also run the step between (encoder inside the MemoryStore deployment)")
    parser.add_argument("--rates", default="", help="also an open-loop run at these offered searches/s "
                        "(e.g. 50,100,150,200): p95 against load, service and mem0")
    parser.add_argument("--paced-clients", type=int, default=32, help="open loop: most searches in flight")
    parser.add_argument("--paced-seconds", type=float, default=10.0, help="open loop: seconds per rate")
    parser.add_argument("--mem0-writers", type=int, default=1,
                        help="mem0 adding threads (its FAISS store logs failed saves with more than one)")
    args = parser.parse_args()
    args.clients = [int(c) for c in args.clients.split(",")]
    args.rates = [float(r) for r in args.rates.split(",") if r.strip()]
    args.sessions = args.sessions or (100 if args.quick else 500)
    args.searches = args.searches or (400 if args.quick else 2000)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    print(f"memory service on {os.cpu_count()} CPUs, loopback; {args.sessions} sessions preloaded, "
          f"{args.searches} searches per level", flush=True)
    with tempfile.TemporaryDirectory(prefix="memory-bench-") as tmp:
        results: dict = {}
        results["batched"], add_rate = run_search(Path(tmp) / "batched", True, args)
        results["rag_hybrid_sessions_per_s"] = add_rate
        for layout, wanted in (("before", args.before), ("encoder in store", args.steps)):
            if wanted:
                results[layout], _ = run_search(Path(tmp) / layout.replace(" ", "-"), True, args, layout=layout)
        for layout in ("before", "encoder in store"):
            if layout in results:
                before_after(results[layout], results["batched"], f"{layout} -> after (default)")
        if args.extra:
            results["extra"], _ = run_search(Path(tmp) / "extra", True, args, layout="extra")
            before_after(results["batched"], results["extra"], f"default -> default + {args.extra!r}")
        if args.rates:
            results["paced"] = run_paced(Path(tmp) / "paced", args)
            if args.extra:
                results["paced_extra"] = run_paced(Path(tmp) / "paced-extra", args, args.extra)
        if not args.skip_unbatched:
            results["unbatched"], _ = run_search(Path(tmp) / "unbatched", False, args)
        if not args.skip_dualmem:
            n = 20 if args.quick else 100
            rate = run_dualmem(Path(tmp) / "dualmem", n)
            results["dualmem_sessions_per_s"] = rate
            print(f"  add: dualmem on the instant endpoint: {rate:.1f} sessions/s ({n} sessions, 8 writers)")
        if not args.skip_mem0:
            mem0 = run_mem0(Path(tmp) / "mem0", args)
            if mem0 is not None:
                results["mem0"] = mem0
                side_by_side(results["batched"], add_rate, mem0)
        if args.rates:
            paced_side_by_side(results["paced"], (results.get("mem0") or {}).get("paced"))
            if "paced_extra" in results:
                print(f"\n  with {args.extra!r}:")
                paced_side_by_side(results["paced_extra"], (results.get("mem0") or {}).get("paced"))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
