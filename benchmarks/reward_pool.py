"""Reward-actor pool scaling: persona-judge items/s with 1, 2, 4 reward actors against a judge endpoint.

Prints figures, asserts nothing. The judge is the fault endpoint (mnemoray.llm.fault_server)
at a fixed latency (default 200 ms) and no faults: it answers each judge request with a
schema-valid verdict, so every item should score. Each pool is built from a
`RewardPoolConfig(reward="persona-judge", engine=openai ...)` exactly as a GRPO run builds it,
warmed up (one batch per actor: builds the engine, opens its connections), then timed on
`--items` items, `--repeats` times (median reported).

With a judge reward an actor scores one batch of `in_flight_per_actor` items at a time,
and that batch is the concurrency handed to its engine, so k actors keep at most
k x in_flight_per_actor judge calls in flight. The scaling rows keep in_flight_per_actor
fixed and change only the number of actors; one extra row gives 1 actor 4x the in-flight
(the same concurrency as 4 actors) for contrast. `ideal` = items / (rounds x latency),
rounds = ceil(batches / actors): what the pool would do with zero client overhead.

CPU columns: CPU seconds used per wall second during the timed run, by the reward actors
(all of them), the driver (this process: batching, ray.wait/get) and the judge server
(its own process by default, `--server subprocess`; `--server thread` runs it on a thread
of this process instead, sharing the driver's GIL). On a 2-core machine their sum is
bounded by 2.0; when it nears that, client CPU and not the pool is what limits scaling.

    python benchmarks/reward_pool.py [--quick] [--items 400] [--in-flight 10] [--actors 1,2,4]
                                     [--latency-ms 200] [--repeats 3] [--server subprocess|thread]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psutil

MODEL = "persona-judge-model"

PERSONAS = [
    "Maya, 34, a nurse in Lyon who loves tea, gardening and quiet evenings; direct but kind.",
    "Tom, 52, a retired teacher who plays chess on Sundays and worries about his dog's health.",
    "Aiko, 27, a game designer who travels for work, drinks too much coffee and keeps a diary.",
]


@dataclass
class Endpoint:
    url: str  # the /v1 base URL for the engine
    stats: Callable[[], dict]  # {"outcomes": ..., "inflight": {"average", "peak", "completed", "busy_s"}}
    reset: Callable[[], None]
    pid: int  # the process the server runs in (this one for --server thread)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def judge_endpoint(latency_ms: float, jitter_ms: float, mode: str) -> Iterator[Endpoint]:
    """The fault endpoint as the judge: its own process (`subprocess`) or a thread here (`thread`)."""
    if mode == "thread":
        from dataclasses import asdict

        from mnemoray.llm.fault_server import FaultConfig, FaultServer

        server = FaultServer(FaultConfig(latency_ms=latency_ms, jitter_ms=jitter_ms, models=[MODEL]))
        url = server.start()
        try:
            yield Endpoint(url, lambda: {**server.counters.snapshot(), "inflight": asdict(server.inflight_stats())},
                           server.counters.reset, os.getpid())
        finally:
            server.stop()
        return
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mnemoray.llm.fault_server", "--port", str(port), "--latency-ms", str(latency_ms),
         "--jitter-ms", str(jitter_ms), "--model", MODEL],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"

    def stats() -> dict:
        return json.loads(urllib.request.urlopen(f"{base}/_stats", timeout=10).read())

    def reset() -> None:
        urllib.request.urlopen(urllib.request.Request(f"{base}/_stats/reset", method="POST"), timeout=10).read()

    try:
        for _ in range(150):  # bounded wait, about 30 s
            try:
                urllib.request.urlopen(f"{base}/v1/models", timeout=2).read()
                break
            except OSError:
                time.sleep(0.2)
        else:
            raise RuntimeError("judge (fault) server did not start")
        yield Endpoint(f"{base}/v1", stats, reset, proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def make_items(n: int, tag: str) -> list:
    from mnemoray.rewards.items import RewardItem

    items = []
    for i in range(n):
        persona = PERSONAS[i % len(PERSONAS)]
        context = (f"session {i % 7}: the user mentioned a trip to Kyoto next month and a new job; "
                   f"earlier they said they cannot sleep after coffee. turn {i}.")
        reply = (f"Reply {tag}{i}: that sounds exciting! Since coffee keeps you up, maybe try the matcha "
                 f"places near the station; I remember you liked quiet gardens too.")
        items.append(RewardItem(id=f"{tag}{i}", data_source="rolememo", solution_str=reply,
                                extra_info={"persona": persona, "context": context}))
    return items


def _cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of these processes (and their threads)."""
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def bench_pool(endpoint: Endpoint, actors: int, in_flight: int, n_items: int, repeats: int, latency_ms: float,
               cpus_per_actor: float) -> dict:
    import ray

    from mnemoray.config.rl import RewardPoolConfig
    from mnemoray.distributed.actors.reward_pool import RewardPool

    cfg = RewardPoolConfig(
        reward="persona-judge", num_actors=actors, in_flight_per_actor=in_flight, cpus_per_actor=cpus_per_actor,
        engine={"engine": "openai", "model": MODEL, "base_url": endpoint.url, "max_in_flight": in_flight,
                "max_retries": 2, "timeout_s": 60},
    )
    pool = RewardPool.from_config(cfg)
    try:
        pids = ray.get([a.pid.remote() for a in pool.actors])
        warm = pool.score(make_items(actors * in_flight, f"warm-{actors}x{in_flight}-"))  # one batch per actor
        warm_failed = sum(r.failed for r in warm.values())
        if warm_failed:
            example = next(r.error for r in warm.values() if r.failed)
            raise RuntimeError(f"warm-up: {warm_failed} items failed, e.g. {example}")
        runs = []
        for rep in range(repeats):
            items = make_items(n_items, f"a{actors}m{in_flight}r{rep}-")
            endpoint.reset()
            actor_cpu0, server_cpu0, driver_cpu0 = _cpu_s(pids), _cpu_s([endpoint.pid]), time.process_time()
            t0 = time.perf_counter()
            results = pool.score(items)
            wall = time.perf_counter() - t0
            actor_cpu, server_cpu = _cpu_s(pids) - actor_cpu0, _cpu_s([endpoint.pid]) - server_cpu0
            driver_cpu = time.process_time() - driver_cpu0
            srv = endpoint.stats()
            scores = [r.score for r in results.values() if not r.failed]
            runs.append({
                "wall_s": wall, "items_s": len(results) / wall, "failed": sum(r.failed for r in results.values()),
                "scored": len(results), "mean": statistics.fmean(scores) if scores else float("nan"),
                "actor_cpu": actor_cpu / wall, "driver_cpu": driver_cpu / wall,
                # thread mode: the server shares this process, so its CPU is already in driver_cpu
                "server_cpu": server_cpu / wall if endpoint.pid != os.getpid() else float("nan"),
                "srv_avg": srv["inflight"]["average"], "srv_peak": srv["inflight"]["peak"],
                "requests": srv["requests"],
            })
    finally:
        pool.close()
    mid = sorted(runs, key=lambda r: r["items_s"])[len(runs) // 2]  # the median run, whole
    batches = math.ceil(n_items / in_flight)
    rounds = math.ceil(batches / actors)
    return {**mid, "actors": actors, "in_flight": in_flight, "items": n_items,
            "items_s_all": [r["items_s"] for r in runs], "failed_all": sum(r["failed"] for r in runs),
            # mean latency per call; with jitter a batch really waits for its slowest call
            "ideal_items_s": n_items / (rounds * latency_ms / 1000), "concurrency": actors * in_flight}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer items and one repeat")
    parser.add_argument("--items", type=int, default=None, help="items timed per pool (default 400, --quick 160)")
    parser.add_argument("--in-flight", type=int, default=10,
                        help="in_flight_per_actor for the scaling rows (the judge batch per actor)")
    parser.add_argument("--actors", default="1,2,4", help="pool sizes, comma-separated")
    parser.add_argument("--latency-ms", type=float, default=200.0, help="the judge's fixed latency")
    parser.add_argument("--jitter-ms", type=float, default=0.0,
                        help="extra judge latency drawn uniformly in [0, jitter] per call (default none)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per pool (median; default 3, quick 1)")
    parser.add_argument("--server", choices=("subprocess", "thread"), default="subprocess",
                        help="judge server in its own process (default) or on a thread of this process")
    parser.add_argument("--ray-cpus", type=int, default=8, help="logical CPUs given to ray.init")
    parser.add_argument("--cpus-per-actor", type=float, default=1.0)
    parser.add_argument("--no-contrast", action="store_true", help="skip the 1 actor x 4 in-flight row")
    args = parser.parse_args()
    n_items = args.items or (160 if args.quick else 400)
    repeats = args.repeats or (1 if args.quick else 3)
    sizes = [int(s) for s in args.actors.split(",") if s.strip()]

    import ray

    from mnemoray.distributed.runtime import WORKER_ENV

    ray.init(address="local", num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": WORKER_ENV})
    physical = psutil.cpu_count(logical=False) or os.cpu_count()
    print(f"machine: {os.cpu_count()} CPUs ({physical} physical cores); ray.init(num_cpus={args.ray_cpus}) logical "
          f"CPUs, {args.cpus_per_actor:g} per reward actor: the actors mostly wait on the judge's I/O, so Ray's "
          f"logical CPUs may exceed the physical cores")
    jitter = f" + uniform [0, {args.jitter_ms:.0f}] ms jitter" if args.jitter_ms else ""
    print(f"judge: fault endpoint ({args.server}{', own process' if args.server == 'subprocess' else ''}), "
          f"{args.latency_ms:.0f} ms fixed latency{jitter}, no faults, schema-valid verdicts; reward persona-judge, "
          f"engine openai (aiohttp transport), engine max_in_flight = in_flight_per_actor")
    print(f"{n_items} items per timed run, {repeats} run(s) per pool (median run shown), after a warm-up of one "
          f"batch per actor\n")

    settings = [(k, args.in_flight) for k in sizes]
    if not args.no_contrast:
        settings.append((1, 4 * args.in_flight))
    rows = []
    with judge_endpoint(args.latency_ms, args.jitter_ms, args.server) as endpoint:
        for actors, in_flight in settings:
            rows.append(bench_pool(endpoint, actors, in_flight, n_items, repeats, args.latency_ms + args.jitter_ms / 2,
                                   args.cpus_per_actor))
    ray.shutdown()

    base = next((r for r in rows if r["actors"] == 1 and r["in_flight"] == args.in_flight), rows[0])
    print(f"{'actors':>6} {'in-flt':>6} {'conc':>5} {'items':>5} {'failed':>6} {'mean':>6} {'wall s':>7} "
          f"{'items/s':>8} {'ideal':>7} {'eff':>5} {'vs 1':>6} {'ideal vs 1':>10} {'srv avg':>7} {'srv pk':>6} "
          f"{'reqs':>5} {'cpu act':>7} {'cpu drv':>7} {'cpu srv':>7} {'runs items/s':>20}")
    for r in rows:
        ratio = r["items_s"] / base["items_s"]
        ideal_ratio = r["ideal_items_s"] / base["ideal_items_s"]
        runs = ",".join(f"{x:.0f}" for x in r["items_s_all"])
        print(f"{r['actors']:>6} {r['in_flight']:>6} {r['concurrency']:>5} {r['scored']:>5} {r['failed_all']:>6} "
              f"{r['mean']:>6.3f} {r['wall_s']:>7.2f} {r['items_s']:>8.1f} {r['ideal_items_s']:>7.1f} "
              f"{r['items_s'] / r['ideal_items_s']:>5.2f} {ratio:>5.2f}x {ideal_ratio:>9.2f}x {r['srv_avg']:>7.1f} "
              f"{r['srv_peak']:>6} {r['requests']:>5} {r['actor_cpu']:>7.2f} {r['driver_cpu']:>7.2f} "
              f"{r['server_cpu']:>7.2f} {runs:>20}")
    print("   conc = actors x in-flight (judge calls the pool can keep open); failed: all timed runs (must be 0);")
    print("   mean = reward mean of the median run; ideal = items / (ceil(batches / actors) x mean latency); "
          "eff = items/s / ideal;")
    print("   vs 1 = items/s / the 1-actor row at the same in-flight (goal at 4 actors: >= 3.5x); srv avg / pk = "
          "judge-side")
    print("   time-weighted / peak in-flight; reqs = judge requests (re-asks included); cpu act / drv / srv = CPU s "
          "per wall s")
    print(f"   of all reward actors / this driver / the judge server (nan: server on a thread here, counted in drv); "
          f"{physical} cores = {physical:.1f} max")
    if args.jitter_ms:
        print("   jitter: an actor's batch ends with its slowest call (the pool hands an actor its next batch only "
              "then),")
        print("   so eff < 1 even with zero overhead, and lower for bigger batches")
    print(f"   load average now: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (other processes skew wall times)")


if __name__ == "__main__":
    main()
