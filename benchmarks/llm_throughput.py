"""LLM request throughput: does the platform keep the configured concurrency busy?

Prints figures, asserts nothing. Three parts, each against real local servers:

1. OpenAIEngine vs the fault endpoint (own process, fixed latency, no faults), at
   max_in_flight 64 and 256, on each transport (`sdk`: the openai client; `aiohttp`:
   bare aiohttp + tenacity) next to bare aiohttp posts (the floor): average in-flight as
   seen by the *server* / configured max (goal >= 0.95), and platform overhead per call =
   mean client latency - server latency (goal <= 5 ms), next to the wall time against
   the ideal n / max_in_flight x latency. Each batch is `--waves` x max requests, sent
   as a job sends them. Run twice: with the server pinned to its own CPU (as a remote
   endpoint would be) and with client and server sharing every CPU.
2. Ray Data `run_requests`, openai engine: the actor-pool path vs Ray Data's
   HttpRequestProcessorConfig path, same rows, same endpoint: server-side in-flight.
3. The Serve endpoint (tiny hf model) with 32 concurrent clients: throughput with
   @serve.batch vs one request at a time (goal >= 5x).

    python benchmarks/llm_throughput.py [--quick] [--waves N] [--cpus both|pinned|shared]
                                        [--skip-serve] [--skip-data]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from mnemoray.llm.event_loop import new_event_loop
from mnemoray.llm.openai_engine import OpenAIEngine
from mnemoray.llm.types import ChatMessage, ChatRequest, SamplingParams
from mnemoray.ports import free_port


@contextmanager
def fault_endpoint(latency_ms: float, *extra_args: str, server_cpus: set[int] | None = None):
    """The fault server in its own process, so it does not share the client's GIL;
    `server_cpus` pins it to those CPUs."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mnemoray.llm.fault_server", "--port", str(port), "--latency-ms", str(latency_ms),
         *extra_args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    if server_cpus:
        os.sched_setaffinity(proc.pid, server_cpus)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):  # bounded wait, about 30 s
            try:
                urllib.request.urlopen(f"{base}/v1/models", timeout=2).read()
                break
            except OSError:
                time.sleep(0.2)
        else:
            raise RuntimeError("fault server did not start")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def server_stats(base: str, reset: bool = False) -> dict:
    if reset:
        urllib.request.urlopen(urllib.request.Request(f"{base}/_stats/reset", method="POST"), timeout=10).read()
        return {}
    return json.loads(urllib.request.urlopen(f"{base}/_stats", timeout=10).read())


def _requests(n: int, tag: str, max_tokens: int = 16) -> list[ChatRequest]:
    return [ChatRequest(id=f"{tag}{i}", messages=[ChatMessage(role="user", content=f"request {tag} {i}")],
                        params=SamplingParams(max_tokens=max_tokens)) for i in range(n)]


async def _raw_aiohttp(base: str, n: int, max_in_flight: int) -> tuple[list[float], float, float]:
    """Reference floor: bare aiohttp posts (no SDK, no retries), same bound and same shape
    as the engine (`max_in_flight` workers pulling requests). Measured like the engine
    rows: after a warm-up wave that opens the connections. Returns the latencies, wall
    seconds and client CPU seconds of the measured batch."""
    import asyncio

    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=max_in_flight)) as session:

        async def run(count: int) -> list[float]:
            latencies: list[float] = []
            pending = iter(range(count))

            async def worker() -> None:
                for i in pending:
                    began = time.perf_counter()
                    body = {"model": "m", "messages": [{"role": "user", "content": f"raw {i}"}]}
                    async with session.post(f"{base}/v1/chat/completions", json=body) as response:
                        await response.json()
                    latencies.append(time.perf_counter() - began)

            await asyncio.gather(*(worker() for _ in range(min(max_in_flight, count))))
            return latencies

        await run(max_in_flight)  # warm-up
        server_stats(base, reset=True)
        cpu0, t0 = time.process_time(), time.perf_counter()
        latencies = await run(n)
        return latencies, time.perf_counter() - t0, time.process_time() - cpu0


def _row(client: str, latency_ms: float, max_in_flight: int, latencies: list[float], ok: int, wall: float,
         cpu: float, srv: dict, client_avg: float = float("nan")) -> dict:
    """One table row. Overheads per call, in ms: `ovh` = mean client latency - the fixed
    latency; `ovh_srv` = mean client latency - the server's mean time holding a request
    (leaves out the server's own timer overshoot); `ovh_cycle` = wall x max / n - latency,
    the time per slot not spent waiting on the server, start-up and drain included."""
    n = len(latencies)
    mean_latency_ms = sum(latencies) / n * 1000
    handler_ms = srv["average"] * srv["busy_s"] / srv["completed"] * 1000 if srv["completed"] else float("nan")
    return {
        "client": client, "max_in_flight": max_in_flight, "requests": n, "ok": ok,
        "server_inflight_avg": srv["average"], "client_inflight_avg": client_avg,
        "ratio": srv["average"] / max_in_flight, "wall_s": wall,
        "ideal_s": math.ceil(n / max_in_flight) * latency_ms / 1000,
        "overhead_ms_per_call": mean_latency_ms - latency_ms,
        "overhead_vs_server_ms": mean_latency_ms - handler_ms,
        "cycle_overhead_ms": wall * 1000 * max_in_flight / n - latency_ms,
        "client_cpu_ms_per_call": cpu / n * 1000,
    }


def bench_raw(base: str, latency_ms: float, max_in_flight: int, n: int) -> dict:
    loop = new_event_loop()  # the loop the engine runs on, so the floor is comparable
    try:
        latencies, wall, cpu = loop.run_until_complete(_raw_aiohttp(base, n, max_in_flight))
    finally:
        loop.close()
    return _row("raw aiohttp", latency_ms, max_in_flight, latencies, n, wall, cpu, server_stats(base)["inflight"])


def bench_openai_engine(base: str, latency_ms: float, max_in_flight: int, n: int, transport: str) -> dict:
    with OpenAIEngine("fault-model", base_url=f"{base}/v1", max_in_flight=max_in_flight,
                      max_retries=0, timeout_s=60, transport=transport) as engine:
        engine.generate(_requests(max_in_flight, "warm"))  # open the connections
        engine.meter.reset()
        server_stats(base, reset=True)
        batch = _requests(n, f"{transport}{max_in_flight}-")
        cpu0, t0 = time.process_time(), time.perf_counter()
        results = engine.generate(batch)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        srv = server_stats(base)["inflight"]
        client = engine.inflight_stats()
    return _row(f"engine {transport}", latency_ms, max_in_flight, [r.latency_s for r in results],
                sum(r.ok for r in results), wall, cpu, srv, client.average)


@contextmanager
def placement(pinned: bool):
    """Where client and server run. Pinned: the server on the last CPU, this process (the
    client) on the others, as when the endpoint is another machine. Shared: both float
    over every CPU, and on a 2-CPU box the scheduler keeps moving them onto one core.
    Yields the server's CPUs (None when shared); restores this process's CPUs after."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not pinned or len(cpus) < 2:
        yield None
        return
    os.sched_setaffinity(0, set(cpus[:-1]))
    try:
        yield {cpus[-1]}
    finally:
        os.sched_setaffinity(0, set(cpus))


def bench_engine(latency_ms: float, waves: int, pinned: bool) -> list[dict]:
    """Per bound: the raw aiohttp floor, then OpenAIEngine on each transport, same endpoint."""
    rows = []
    with placement(pinned) as server_cpus, fault_endpoint(latency_ms, server_cpus=server_cpus) as base:
        where = "pinned" if server_cpus else "shared"
        for max_in_flight in (64, 256):
            n = max_in_flight * waves
            rows.append({**bench_raw(base, latency_ms, max_in_flight, n), "cpus": where})
            for transport in ("sdk", "aiohttp"):
                rows.append({**bench_openai_engine(base, latency_ms, max_in_flight, n, transport), "cpus": where})
    return rows


def bench_ray_data(latency_ms: float, n: int) -> list[dict]:
    import ray

    from mnemoray.distributed.data.llm_requests import run_requests

    rows_in = [{"id": f"d{i}", "messages": [{"role": "user", "content": f"row {i}"}]} for i in range(n)]
    out = []
    with fault_endpoint(latency_ms) as base:
        for path, actors in (("actors", 1), ("actors", 2), ("http", 1), ("http", 2)):
            cfg = {"engine": "openai", "model": "fault-model", "base_url": f"{base}/v1", "max_in_flight": 64,
                   "max_retries": 2, "timeout_s": 60}
            ds = ray.data.from_items(rows_in, override_num_blocks=8)
            server_stats(base, reset=True)
            t0 = time.perf_counter()
            got = run_requests(ds, cfg, openai_path=path, min_actors=actors, max_actors=actors).take_all()
            wall = time.perf_counter() - t0
            srv = server_stats(base)
            out.append({"path": path, "actors": actors, "rows": len(got), "wall_s": wall,
                        "server_inflight_avg": srv["inflight"]["average"], "server_peak": srv["inflight"]["peak"]})
    return out


def bench_serve(requests_per_client: int, max_tokens: int, clients: int = 32) -> list[dict]:
    from ray import serve

    from mnemoray.distributed.serve.llm_app import LLMAppConfig, run_llm_app
    from mnemoray.llm.tiny import ensure_tiny

    model = ensure_tiny(Path(tempfile.gettempdir()) / "mnemoray-bench-tiny")
    out = []
    port = free_port()
    for batching in (True, False):
        # A batch waits up to 100 ms to fill: on 2 cores, requests reach the replica
        # slowly enough that a 10 ms wait launches half-empty batches.
        cfg = LLMAppConfig(model=str(model), model_id="tiny", batching=batching, max_batch_size=clients,
                           batch_wait_timeout_s=0.1)
        url = run_llm_app(cfg, port=port)
        with OpenAIEngine("tiny", base_url=url, max_in_flight=clients, max_retries=0, timeout_s=300) as engine:
            engine.generate(_requests(clients, "warm", max_tokens))
            n = clients * requests_per_client
            t0 = time.perf_counter()
            results = engine.generate(_requests(n, f"s{batching}-", max_tokens))
            wall = time.perf_counter() - t0
        stats = serve.get_deployment_handle("HFChatModel", app_name="llm").batch_stats.remote().result()
        out.append({"batching": batching, "requests": n, "ok": sum(r.ok for r in results), "wall_s": wall,
                    "req_per_s": n / wall, "max_batch": stats["max_batch"]})
        serve.delete("llm")
    serve.shutdown()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests")
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--waves", type=int, default=None,
                        help="part 1 batch size in multiples of max_in_flight (default 30, --quick 4): a long "
                             "batch, as jobs run, so start-up and drain weigh little")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens generated per Serve request")
    parser.add_argument("--cpus", choices=("both", "pinned", "shared"), default="both",
                        help="part 1 placement of client and fault server (see placement())")
    parser.add_argument("--skip-serve", action="store_true")
    parser.add_argument("--skip-data", action="store_true")
    args = parser.parse_args()
    if args.waves is None:
        args.waves = 4 if args.quick else 30

    print(f"machine: {os.cpu_count()} CPUs; fault endpoint latency {args.latency_ms:.0f} ms, no faults\n")
    print("1) OpenAIEngine per transport vs fault endpoint (raw aiohttp rows: this machine's floor)")
    print(f"{'cpus':>6} {'client':>14} {'max':>5} {'reqs':>6} {'ok':>6} {'srv avg':>8} {'cli avg':>8} {'ratio':>6} "
          f"{'wall s':>7} {'ideal s':>7} {'ovh':>6} {'ovh srv':>7} {'ovh cyc':>7} {'cpu ms':>7} {'1-core cap':>10}")
    rows = [r for pinned in {"both": (True, False), "pinned": (True,), "shared": (False,)}[args.cpus]
            for r in bench_engine(args.latency_ms, args.waves, pinned)]
    for r in rows:
        print(
            f"{r['cpus']:>6} {r['client']:>14} {r['max_in_flight']:>5} {r['requests']:>6} {r['ok']:>6} "
            f"{r['server_inflight_avg']:>8.1f} "
            f"{r['client_inflight_avg']:>8.1f} {r['ratio']:>6.3f} {r['wall_s']:>7.2f} {r['ideal_s']:>7.2f} "
            f"{r['overhead_ms_per_call']:>6.1f} {r['overhead_vs_server_ms']:>7.1f} {r['cycle_overhead_ms']:>7.1f} "
            f"{r['client_cpu_ms_per_call']:>7.2f} {args.latency_ms / r['client_cpu_ms_per_call']:>10.0f}"
        )
    print("   goal: ratio >= 0.95, overhead <= 5 ms/call. ratio = server-side average in-flight / max.")
    print("   ms per call: ovh = client latency - fixed latency; ovh srv = client latency - server's time holding")
    print("   the request; ovh cyc = wall x max / n - latency (start-up and drain included); cpu ms = client CPU;")
    print("   1-core cap = in-flight one fully free client core could sustain (latency / client CPU per call);")
    print("   cpus: pinned = server on its own CPU, client on the rest (as with a remote endpoint); shared = both")
    print("   float over all CPUs")
    print(f"   load average now: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (other processes skew wall times)\n")

    if args.skip_data and args.skip_serve:
        return
    import ray

    from mnemoray.distributed.runtime import WORKER_ENV

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": WORKER_ENV})
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    if not args.skip_data:
        n = 256 if args.quick else 640
        print(f"2) Ray Data run_requests, openai engine, {n} rows, max_in_flight 64")
        print(f"{'path':>7} {'actors':>6} {'rows':>5} {'wall s':>7} {'srv avg in-flight':>17} {'srv peak':>8}")
        for r in bench_ray_data(args.latency_ms, n):
            print(f"{r['path']:>7} {r['actors']:>6} {r['rows']:>5} {r['wall_s']:>7.2f} "
                  f"{r['server_inflight_avg']:>17.1f} {r['server_peak']:>8}")
        print()
    if not args.skip_serve:
        per_client = 2 if args.quick else 4
        print(f"3) Serve endpoint (tiny hf model, {args.new_tokens} new tokens), 32 concurrent clients")
        rows = bench_serve(per_client, args.new_tokens)
        for r in rows:
            print(f"   batching={str(r['batching']):5} requests={r['requests']} ok={r['ok']} wall={r['wall_s']:.2f}s "
                  f"throughput={r['req_per_s']:.1f} req/s largest batch={r['max_batch']}")
        speedup = rows[0]["req_per_s"] / rows[1]["req_per_s"]
        print(f"   @serve.batch speedup: {speedup:.1f}x (goal >= 5x)")
    ray.shutdown()


if __name__ == "__main__":
    main()
