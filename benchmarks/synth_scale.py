"""Synthesis at scale: `synth rolememo` on N personas through the zero-fault instant endpoint.

Prints figures, asserts nothing. For each N (default 500 and 2,000), in one run:
- personas per minute (whole job: every stage, history assembly, export);
- average in-flight requests seen by the endpoint / the configured maximum
  (llm_actors x max_in_flight; goal >= 0.95), over the time requests were outstanding;
- driver peak RSS (must stay flat as N grows: the driver keeps ids and counters only);
- history lengths (one history of up to --target-tokens per persona, counted with the
  tiny model's tokenizer) from the run's stats.json.
The endpoint answers each schema with a valid instance whose strings are made-up words
drawn per request (`--vary-strings`), so every check sees distinct texts; its answers
pass the LLM-judged checks, which keeps every stage loaded.

    python benchmarks/synth_scale.py [--personas 500,2000] [--target-tokens 256000] [--quick]

`--kind realmem` runs `synth realmem` instead (default 50 and 200 personas x 3 projects,
generated persona records with goals from RealMem's topics file): personas per minute,
average in-flight / the fleet's maximum although every persona is sequential, driver peak RSS.

    python benchmarks/synth_scale.py --kind realmem [--personas 50,200] [--latency-ms 100,200] [--compare DIR]
    python benchmarks/synth_scale.py --kind realmem --encode-chunks   # a worker's encode cost by chunk size
    # one 256k-token history: more projects, phases and turns so the plan has enough sessions
    python benchmarks/synth_scale.py --kind realmem --personas 1 --projects 10 --phases 10 --min-turns 24 \
        --max-turns 24 --latency-ms 10
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llm_throughput import fault_endpoint, server_stats  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")


class TreeCPU:
    """CPU seconds of every process under this one (the job, its Ray processes, the endpoint), by role,
    sampled from /proc every `every` s in a thread: a process's last sample counts after it exits."""

    ROLES = (("fault_server", "endpoint"), ("ray::PersonaWorker", "persona workers"), ("ray::", "other ray actors"),
             ("--one", "driver"))

    def __init__(self, every: float = 0.5):
        import threading

        self.every, self.seen, self.stop_event = every, {}, threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _role(self, pid: str) -> str:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return "ray system"
        return next((role for mark, role in self.ROLES if mark in cmd), "ray system")

    def sample(self) -> None:
        parent: dict[str, str] = {}
        ticks: dict[str, tuple[str, int]] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                fields = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            parent[entry.name] = fields[1]
            ticks[entry.name] = (fields[19], int(fields[11]) + int(fields[12]))  # start time, utime + stime
        mine, todo = set(), [str(os.getpid())]
        children: dict[str, list[str]] = {}
        for pid, ppid in parent.items():
            children.setdefault(ppid, []).append(pid)
        while todo:
            for child in children.get(todo.pop(), []):
                mine.add(child)
                todo.append(child)
        for pid in mine:
            start, used = ticks[pid]
            role = self.seen.get((pid, start), ("", 0))[0]
            if role in ("", "ray system", "other ray actors"):  # a Ray worker names its actor once it has one
                role = self._role(pid)
            self.seen[(pid, start)] = (role, used)

    def _loop(self) -> None:
        while not self.stop_event.wait(self.every):
            self.sample()

    def totals(self) -> dict[str, float]:
        self.sample()
        out: dict[str, float] = {}
        for role, used in list(self.seen.values()):
            out[role] = out.get(role, 0.0) + used / TICK
        return out

    @staticmethod
    def since(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {role: after[role] - before.get(role, 0.0) for role in after}


def one_run(args: argparse.Namespace) -> None:
    """Child process: run the job once, print a JSON line with wall time and peak RSS."""
    import resource

    from mnemoray.config import load_config
    from mnemoray.config.synth import RoleMemoConfig
    from mnemoray.distributed.data.synth_rolememo import run_rolememo
    from mnemoray.llm.tiny import ensure_tiny

    tokenizer = ensure_tiny(Path(args.tiny_cache).expanduser(), arch="qwen2", seed=0)
    overrides = [f"out={args.out}", f"llm={args.llm}", "llm_overrides=[]", f"tokenizer={tokenizer}",
                 f"limit={args.n}", f"target_tokens={args.target_tokens}", "call.max_text_chars=160",
                 f"dialogue.rounds={args.rounds}", f"distractors.rounds={args.rounds}",
                 f"distractors.pool_size={args.pool}", f"ray.llm_actors={args.actors}", "ray.write_every=256",
                 "ray.num_cpus=2", "ray.workers=1", f"ray.mode={args.mode}"]
    cfg = load_config(RoleMemoConfig, REPO / "configs" / "synth" / "rolememo_local.yaml", overrides)
    start = time.perf_counter()
    stats = run_rolememo(cfg)
    wall = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps({"wall_s": wall, "peak_rss_mb": peak_mb, "histories": stats["histories"],
                                  "totals": stats["totals"]}), flush=True)


def write_personas(path: Path, n: int) -> Path:
    """n persona records without goals (goals come from RealMem's topics file, 3 per persona)."""
    jobs = ["nurse", "teacher", "welder", "chef", "student", "accountant", "pilot", "farmer"]
    cities = ["Lyon", "Osaka", "Lagos", "Lima", "Pune", "Oslo", "Quito", "Perth"]
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"name": f"Person {i:05d}", "description": f"A {30 + i % 30}-year-old "
                                f"{jobs[i % len(jobs)]} living in {cities[i // len(jobs) % len(cities)]}."}) + "\n")
    return path


def one_realmem_run(args: argparse.Namespace) -> None:
    """Child process: one `synth realmem` run, a JSON line with wall time and peak RSS."""
    import resource

    from mnemoray.config import load_config
    from mnemoray.config.synth import RealMemSynthConfig
    from mnemoray.distributed.data.synth_realmem import run_realmem
    from mnemoray.llm.tiny import ensure_tiny

    tokenizer = ensure_tiny(Path(args.tiny_cache).expanduser(), arch="qwen2", seed=0)
    personas = write_personas(Path(args.out + "_personas.jsonl"), args.n)
    topics = REPO.parent / "shared" / "data" / "realmem" / "all_persona_topic" / "topic&goal&attr.json"
    overrides = [f"out={args.out}", f"llm={args.llm}", "llm_overrides=[]", f"tokenizer={tokenizer}",
                 f"personas={personas}", f"goals={topics}", "limit=null", f"target_tokens={args.target_tokens}",
                 f"plan.projects={args.projects}", f"plan.phases={args.phases}",
                 f"plan.max_sessions_per_event={args.sessions_per_event}", f"dialogue.max_turns={args.max_turns}",
                 f"dialogue.min_turns={args.min_turns}",
                 f"ray.llm_actors={args.actors}", "ray.num_cpus=2", f"ray.workers={args.workers}",
                 f"ray.personas_per_worker={args.per_worker}", "ray.write_every=256"]
    cfg = load_config(RealMemSynthConfig, REPO / "configs" / "synth" / "realmem_local.yaml", overrides)
    start = time.perf_counter()
    stats = run_realmem(cfg)
    wall = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps({"wall_s": wall, "peak_rss_mb": peak_mb, "histories": stats["histories"],
                                  "turns": stats["sessions"]["turns"], "totals": stats["totals"]}), flush=True)


def realmem_main(args: argparse.Namespace) -> None:
    sizes = [int(n) for n in args.personas.split(",")]
    codes = [("before", Path(args.compare).resolve()), ("after", REPO)] if args.compare else [("", REPO)]
    cpu = TreeCPU()
    for latency in [float(x) for x in str(args.latency_ms).split(",")]:
        realmem_runs(args, sizes, codes, latency, cpu)


def realmem_runs(args: argparse.Namespace, sizes: list[int], codes: list[tuple[str, Path]], latency: float,
                 cpu: TreeCPU) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp, fault_endpoint(latency, "--vary-strings") as base:
        llm = Path(tmp) / "llm.yaml"
        llm.write_text(f"engine: openai\nmodel: fault-model\nbase_url: {base}/v1\nmax_in_flight: {args.max_in_flight}\n"
                       "timeout_s: 60\nmax_retries: 3\nstructured_retries: 1\n")
        for n, (label, code) in [(n, c) for n in sizes for c in codes]:
            server_stats(base, reset=True)
            out = Path(tmp) / f"rm{n}{label}"
            cmd = [sys.executable, str(code / "benchmarks" / "synth_scale.py"), "--kind", "realmem", "--one", str(n),
                   "--out", str(out),
                   "--llm", str(llm), "--target-tokens", str(args.target_tokens), "--actors", str(args.actors),
                   "--workers", str(args.workers), "--per-worker", str(args.per_worker),
                   "--projects", str(args.projects), "--phases", str(args.phases),
                   "--sessions-per-event", str(args.sessions_per_event), "--max-turns", str(args.max_turns),
                   "--min-turns", str(args.min_turns),
                   "--tiny-cache", args.tiny_cache]
            # a fresh embedding store per run: every text is encoded, as in a first run; the code of `code`
            env = {**os.environ, "MNEMORAY_EMBEDDING_CACHE": str(out) + "_embeddings",
                   "PYTHONPATH": os.pathsep.join([str(code / "platform"), os.environ.get("PYTHONPATH", "")])}
            cpu0 = cpu.totals()
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=code, env=env)
            used = TreeCPU.since(cpu0, cpu.totals())
            line = next((out for out in proc.stdout.splitlines() if out.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                print(proc.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"realmem run with {n} personas failed")
            rows.append((n, label, json.loads(line[len("RESULT "):]), server_stats(base)["inflight"], used))
    configured = args.actors * args.max_in_flight
    print(f"\nsynth realmem through the instant endpoint at {latency:g} ms ({args.actors} client actors x "
          f"max_in_flight {args.max_in_flight} = {configured}; {args.workers} workers x {args.per_worker} personas; "
          f"{args.projects} projects x {args.phases} phases per persona, up to {args.sessions_per_event} sessions per "
          f"event of up to {args.max_turns} turns; target {args.target_tokens:,} tokens)")
    print(f"{'personas':>8} {'code':>6} {'wall s':>8} {'personas/min':>12} {'LLM calls':>10} {'calls/s':>8} "
          f"{'avg in flight':>13} {'ratio':>6} {'CPU ms/call':>11} {'workers':>7} {'driver peak RSS MB':>19} "
          f"{'sessions':>8} {'turns/session':>13} {'median tokens':>14}")
    for n, label, r, inf, used in rows:
        calls = r["totals"]["llm_calls"]
        print(f"{n:>8} {label:>6} {r['wall_s']:>8.1f} {n / r['wall_s'] * 60:>12.1f} {calls:>10} "
              f"{calls / r['wall_s']:>8.1f} {inf['average']:>13.1f} {inf['average'] / configured:>6.2f} "
              f"{sum(used.values()) / calls * 1000:>11.2f} {used.get('persona workers', 0.0) / calls * 1000:>7.2f} "
              f"{r['peak_rss_mb']:>19.0f} {r['histories']['sessions']:>8} {r['turns']['median']:>13} "
              f"{r['histories']['median']:>14,}")
    for n, label, r, _, used in rows:
        parts = ", ".join(f"{role} {sec / r['totals']['llm_calls'] * 1000:.2f}" for role, sec in sorted(used.items()))
        print(f"  CPU ms per LLM call, {n} personas {label}: {parts}")
    for label in dict.fromkeys(label for _, label, *_ in rows):
        mine = [(n, r) for n, lab, r, _, _ in rows if lab == label]
        if len(mine) >= 2:
            (n0, r0), (n1, r1) = mine[0], mine[-1]
            print(f"{label or 'driver'} peak RSS {n1} vs {n0} personas: {r1['peak_rss_mb'] / r0['peak_rss_mb']:.2f}x "
                  f"for {n1 / n0:.1f}x the personas")


def encode_chunks() -> None:
    """The persona worker's encode cost per text by chunk size (`ray.encode_batch`), in this process:
    texts like the instant endpoint's (up to 80 characters of made-up words; half of them dated
    like memory points), batches of 8 / 32 / 96 texts, rounds interleaved, 1 torch thread."""
    import random

    import torch

    from mnemoray.index.embedder import Embedder
    from mnemoray.llm.schema_instance import instance_for

    torch.set_num_threads(1)
    model = Embedder(store=None).model
    schema = {"type": "string", "minLength": 1, "maxLength": 80}
    texts = [("[2025-02-05] " if i % 2 else "") + instance_for(schema, salt=str(i)) for i in range(192)]
    rng = random.Random(0)
    used: dict[tuple[int, int], float] = {}
    count: dict[tuple[int, int], int] = {}
    for _ in range(3):
        for size in (8, 32, 96):
            batches = [rng.sample(texts, size) for _ in range(max(2, 192 // size))]
            for chunk in (4, 8, 16, 64):
                began = time.process_time()
                for batch in batches:
                    model.encode(batch, batch_size=chunk, normalize_embeddings=True)
                used[size, chunk] = used.get((size, chunk), 0.0) + time.process_time() - began
                count[size, chunk] = count.get((size, chunk), 0) + len(batches) * size
    print(f"{'batch':>6} " + " ".join(f"{'chunk ' + str(c):>9}" for c in (4, 8, 16, 64)) + "   (CPU ms per text)")
    for size in (8, 32, 96):
        print(f"{size:>6} " + " ".join(f"{used[size, c] / count[size, c] * 1000:>9.2f}" for c in (4, 8, 16, 64)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kind", choices=["rolememo", "realmem"], default="rolememo")
    parser.add_argument("--personas", default=None, help="default: 500,2000 (rolememo), 50,200 (realmem)")
    parser.add_argument("--workers", type=int, default=1, help="realmem: persona worker actors")
    parser.add_argument("--per-worker", type=int, default=96, help="realmem: personas one worker runs at once")
    parser.add_argument("--projects", type=int, default=3, help="realmem: projects (goals) per persona")
    parser.add_argument("--phases", type=int, default=1, help="realmem: phases per project (3-5 events each)")
    parser.add_argument("--sessions-per-event", type=int, default=1, help="realmem: most sessions per event")
    parser.add_argument("--max-turns", type=int, default=8, help="realmem: most turns per session")
    parser.add_argument("--min-turns", type=int, default=6,
                        help="realmem: fewest turns per session (the endpoint's evaluator always reports the goal)")
    parser.add_argument("--target-tokens", type=int, default=256_000)
    parser.add_argument("--max-in-flight", type=int, default=128)
    parser.add_argument("--actors", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=24)
    parser.add_argument("--pool", type=int, default=200)
    parser.add_argument("--latency-ms", default="200", help="realmem: comma-separated, one endpoint each")
    parser.add_argument("--compare", default=None,
                        help="realmem: a checkout of other code (e.g. `git worktree add /tmp/before HEAD`) run "
                        "before this one at each size, side by side")
    parser.add_argument("--tiny-cache", default="~/.cache/mnemoray/tiny")
    parser.add_argument("--modes", default="stream", help="comma-separated: stream (one pipeline, one fleet), stages")
    parser.add_argument("--quick", action="store_true", help="50 and 100 personas, 20k-token histories")
    parser.add_argument("--mode", default="stream", help=argparse.SUPPRESS)
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--llm", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--encode-chunks", action="store_true",
                        help="realmem: only the persona worker's encode cost per text by chunk size (ray.encode_batch)")
    args = parser.parse_args()
    if args.encode_chunks:
        encode_chunks()
        return
    if args.kind == "realmem":
        args.personas = args.personas or "50,200"
        if args.one is not None:
            args.n = args.one
            one_realmem_run(args)
        else:
            realmem_main(args)
        return
    args.personas = args.personas or "500,2000"
    if args.one is not None:
        args.n = args.one
        one_run(args)
        return
    sizes = [50, 100] if args.quick else [int(n) for n in args.personas.split(",")]
    if args.quick:
        args.target_tokens = 20_000
    rows = []
    with tempfile.TemporaryDirectory() as tmp, fault_endpoint(float(args.latency_ms), "--vary-strings") as base:
        llm = Path(tmp) / "llm.yaml"
        llm.write_text(f"engine: openai\nmodel: fault-model\nbase_url: {base}/v1\nmax_in_flight: {args.max_in_flight}\n"
                       "timeout_s: 60\nmax_retries: 3\nstructured_retries: 1\n")
        for mode, n in [(m, n) for n in sizes for m in args.modes.split(",")]:
            server_stats(base, reset=True)
            cmd = [
                sys.executable,
                __file__,
                "--one",
                str(n),
                "--out",
                str(Path(tmp) / f"run{n}{mode}"),
                "--llm",
                str(llm),
                "--mode",
                mode,
                "--target-tokens",
                str(args.target_tokens),
                "--actors",
                str(args.actors),
                "--rounds",
                str(args.rounds),
                "--pool",
                str(args.pool),
                "--tiny-cache",
                args.tiny_cache,
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env={**os.environ})
            line = next((out for out in proc.stdout.splitlines() if out.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                print(proc.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"run with {n} personas failed")
            result = json.loads(line[len("RESULT "):])
            inflight = server_stats(base)["inflight"]
            rows.append((mode, n, result, inflight))
    configured = args.actors * args.max_in_flight
    print(f"\nsynth rolememo through the instant endpoint ({args.actors} client actors x max_in_flight "
          f"{args.max_in_flight} = {configured}; target {args.target_tokens:,} tokens per history)")
    print(f"{'mode':>6} {'personas':>8} {'wall s':>8} {'personas/min':>12} {'LLM calls':>10} {'calls/s':>8} "
          f"{'avg in flight':>13} {'ratio':>6} {'driver peak RSS MB':>19} {'median tokens':>14} {'histories':>9}")
    for mode, n, r, inf in rows:
        calls = r["totals"]["llm_calls"]
        print(
            f"{mode:>6} {n:>8} {r['wall_s']:>8.1f} {n / r['wall_s'] * 60:>12.1f} {calls:>10} "
            f"{calls / r['wall_s']:>8.1f} "
            f"{inf['average']:>13.1f} {inf['average'] / configured:>6.2f} {r['peak_rss_mb']:>19.0f} "
            f"{r['histories']['median']:>14,} {r['histories']['count']:>9}"
        )
    for mode in args.modes.split(","):
        mine = [(n, r) for m, n, r, _ in rows if m == mode]
        if len(mine) >= 2:
            (n0, r0), (n1, r1) = mine[0], mine[-1]
            print(f"{mode}: driver peak RSS {n1} vs {n0} personas: {r1['peak_rss_mb'] / r0['peak_rss_mb']:.2f}x "
                  f"for {n1 / n0:.1f}x the personas")
    by = {(m, n): r for m, n, r, _ in rows}
    for n in sizes:
        if ("stream", n) in by and ("stages", n) in by:
            print(f"{n} personas: stream is {by[('stages', n)]['wall_s'] / by[('stream', n)]['wall_s']:.2f}x "
                  "as fast as stages")


if __name__ == "__main__":
    main()
