"""Weight sync on CPU: how long pushing new policy weights to the rollout engines takes, by model size.

Prints figures, asserts nothing. Random Qwen2 checkpoints of about 0.5M (the tiny test
model), 10M, 50M and 100M parameters (fp32, the tiny model's tokenizer) are pushed with
`mnemoray.distributed.actors.rollout.push_weights` (one `ray.put` of the state dict, then
every engine's `load_weights`: read from the object store, deserialize, `load_state_dict`)
to 1 and 2 `hf` rollout engines (`start_rollout_actors`, CPU, 1 torch thread each). The
state dict is built as GRPO builds it (`{k: v.detach().cpu()}` of the policy's
`state_dict()`, ZeRO-2), from a policy model loaded in this process. After a warm-up push,
each figure is the median of `--repeats` pushes; `put` is a separate `ray.put` of the same
dict alone (freed right after), timed in the same repeats (before or after the push, alternately).

Modes: `tensors` pushes a dict of torch tensors, which Ray pickles in-band (a copy into
a bytes buffer on put, another on every engine's get): the push before packing;
`packed` is `push_weights` as it is now (`mnemoray.rl.weights.pack_weights`: numpy arrays,
one copy into the object store, engines read them in place); `zero-copy` is `tensors`
with RAY_ENABLE_ZERO_COPY_TORCH_TENSORS=1; `broadcast` is `rollout.weight_sync: broadcast`
(`mnemoray.distributed.actors.weight_sync.BroadcastSync`: a gloo group of this process as
rank 0 and the engines, byte buckets of `--bucket-mb`, each engine loading what it received).
`--serializer all` (default) runs each mode in its own child process (the flag is read when
ray is imported), side by side.

    python benchmarks/weight_sync.py [--quick] [--sizes 0.5M,10M,50M,100M] [--engines 1,2] [--repeats 5]
                                     [--serializer all|tensors|packed|zero-copy|broadcast] [--bucket-mb 256]
                                     [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = ("tensors", "packed", "zero-copy", "broadcast")

# hidden, layers, intermediate, attention heads, kv heads (head dim 64); None = the tiny test model
SHAPES: dict[str, tuple[int, int, int, int, int] | None] = {
    "0.5M": None,
    "10M": (256, 10, 1024, 4, 2),
    "50M": (512, 14, 2048, 8, 2),
    "100M": (768, 12, 3072, 12, 2),
}
ZERO_COPY_ENV = "RAY_ENABLE_ZERO_COPY_TORCH_TENSORS"


def ensure_model(cache: Path, size: str) -> Path:
    """A random Qwen2 checkpoint of that size (built once, then reused), tokenizer from the tiny model."""
    from mnemoray.llm.tiny import ensure_tiny

    tiny = ensure_tiny(cache, arch="qwen2", seed=0)
    shape = SHAPES[size]
    if shape is None:
        return tiny
    target = cache / f"qwen2-{size}-seed0"
    if (target / "config.json").exists():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, Qwen2Config

    from mnemoray.train.export import copy_tokenizer_files

    hidden, layers, intermediate, heads, kv_heads = shape
    tok = AutoTokenizer.from_pretrained(tiny)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=hidden, intermediate_size=intermediate,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                      head_dim=64, max_position_embeddings=4096, tie_word_embeddings=True,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                               pad_token_id=tok.pad_token_id)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=cache))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        copy_tokenizer_files(tiny, tmp)
        os.rename(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def policy_state(model_path: Path) -> tuple[object, dict, int, int]:
    """(policy model, its state dict as GRPO pushes it, unique parameters, bytes of that dict's tensors)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    params = sum(p.numel() for p in model.parameters())  # tied embeddings counted once
    nbytes = sum(v.numel() * v.element_size() for v in state.values())  # as sent: tied weights under both names
    return model, state, params, nbytes


def push_tensors(actors: list, state: dict, version: int) -> object:
    """The push as it was before packing: a dict of torch tensors through Ray's serializer."""
    import ray

    ref = ray.put(dict(state))
    ray.get([a.load_weights.remote(ref, version) for a in actors])
    return ref


def bench_size(size: str, model_path: Path, engines: int, repeats: int, mode: str, bucket_mb: float = 256) -> dict:
    import ray
    import torch

    from mnemoray.distributed.actors.rollout import push_weights, start_rollout_actors
    from mnemoray.distributed.actors.weight_sync import BroadcastSync
    from mnemoray.rl.weights import pack_weights

    payload = pack_weights if mode in ("packed", "broadcast") else dict

    model, state, params, nbytes = policy_state(model_path)
    started = start_rollout_actors(engines, "hf", str(model_path), num_cpus=1, num_gpus=0, device="cpu",
                                   dtype="float32")
    # newer versions also return the engines' placement group (to release when done)
    actors, group = started if isinstance(started, tuple) else (started, None)
    sync = BroadcastSync(actors, device="cpu", bucket_mb=bucket_mb) if mode == "broadcast" else None
    push = push_weights if mode == "packed" else push_tensors
    if sync is not None:
        def push(actors: list, state: dict, version: int) -> object:  # push_weights' shape
            return sync.push(state, version)
    try:
        ray.get([a.version.remote() for a in actors])  # engines loaded
        push(actors, state, 1)  # warm-up: object store, first deserialization
        puts, pushes = [], []
        for rep in range(repeats):
            with torch.no_grad():  # "new" weights each time, as after an update
                for p in model.parameters():
                    p.add_(1e-4)
            version = rep + 2
            for step in ("put", "push") if rep % 2 == 0 else ("push", "put"):  # alternate: no order bias
                t0 = time.perf_counter()
                if step == "put":
                    ref = ray.put(payload(state))
                    puts.append(time.perf_counter() - t0)
                    del ref
                else:
                    push(actors, state, version)
                    pushes.append(time.perf_counter() - t0)
            got = ray.get([a.version.remote() for a in actors])
            if got != [version] * engines:
                raise RuntimeError(f"{size}: engines report versions {got}, expected {version}")
        if sync is not None and (sync.builds, sync.fallbacks) != (1, 0):
            raise RuntimeError(f"{size}: broadcast group built {sync.builds}x, {sync.fallbacks} fallbacks")
    finally:
        if sync is not None:
            sync.close()
        for a in actors:
            ray.kill(a, no_restart=True)
        if group is not None:
            from ray.util.placement_group import remove_placement_group

            remove_placement_group(group)
    put_s, push_s = statistics.median(puts), statistics.median(pushes)
    return {"size": size, "engines": engines, "params": params, "mb": nbytes / 1e6, "tensors": len(state),
            "put_s": put_s, "push_s": push_s, "load_s": min(pushes) - min(puts), "puts": puts, "pushes": pushes}


def child(args: argparse.Namespace) -> None:
    """One serializer mode, one Ray session: JSON rows on stdout (one per line, prefixed)."""
    import ray

    from mnemoray.distributed.runtime import WORKER_ENV

    cache = Path(args.cache).expanduser()
    paths = {size: ensure_model(cache, size) for size in args.sizes}
    env = dict(WORKER_ENV)
    if os.environ.get(ZERO_COPY_ENV):
        env[ZERO_COPY_ENV] = os.environ[ZERO_COPY_ENV]
    ray.init(address="local", num_cpus=max(args.engines) + 1, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": env})
    try:
        for size in args.sizes:
            for engines in args.engines:
                row = bench_size(size, paths[size], engines, args.repeats, args.mode, args.bucket_mb)
                print("ROW " + json.dumps({**row, "serializer": args.mode}), flush=True)
    finally:
        ray.shutdown()


def run_mode(args: argparse.Namespace, mode: str) -> list[dict]:
    env = {**os.environ}
    env.pop(ZERO_COPY_ENV, None)
    if mode == "zero-copy":
        env[ZERO_COPY_ENV] = "1"
    cmd = [sys.executable, __file__, "--child", "--mode", mode, "--cache", str(args.cache),
           "--sizes", ",".join(args.sizes), "--engines", ",".join(map(str, args.engines)),
           "--repeats", str(args.repeats), "--bucket-mb", str(args.bucket_mb)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return [json.loads(line[4:]) for line in proc.stdout.splitlines() if line.startswith("ROW ")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="sizes 0.5M and 10M, 3 repeats")
    parser.add_argument("--sizes", default=None, help=f"comma-separated, of {list(SHAPES)} (default all)")
    parser.add_argument("--engines", default="1,2", help="rollout engine counts, comma-separated")
    parser.add_argument("--repeats", type=int, default=None, help="timed pushes per setting (median; default 5)")
    parser.add_argument("--serializer", choices=("all", *MODES), default="all",
                        help=f"tensors (a dict of torch tensors, Ray's default pickling), packed (push_weights: "
                             f"numpy arrays, read in place), zero-copy (tensors with {ZERO_COPY_ENV}=1), broadcast "
                             f"(rollout.weight_sync: broadcast, gloo), or all")
    parser.add_argument("--bucket-mb", type=float, default=256.0,
                        help="broadcast: bucket size (rollout.sync_bucket_mb)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "mnemoray-bench-weights",
                        help="where the random checkpoints are built once")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="packed", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.sizes = [s for s in (args.sizes or ("0.5M,10M" if args.quick else ",".join(SHAPES))).split(",") if s]
    unknown = [s for s in args.sizes if s not in SHAPES]
    if unknown:
        parser.error(f"unknown sizes {unknown}; choose from {list(SHAPES)}")
    args.engines = [int(e) for e in args.engines.split(",") if e.strip()]
    args.repeats = args.repeats or (3 if args.quick else 5)
    if args.child:
        child(args)
        return

    modes = list(MODES) if args.serializer == "all" else [args.serializer]
    print(f"machine: {os.cpu_count()} CPUs, no GPU; hf rollout engines on CPU (fp32, 1 torch thread, 1 Ray CPU "
          f"each); {args.repeats} timed pushes per setting after a warm-up, medians shown")
    print(f"serializer: {', '.join(modes)} (zero-copy = {ZERO_COPY_ENV}=1); each mode in its own process and Ray "
          f"session\n")
    rows = [r for mode in modes for r in run_mode(args, mode)]

    print(f"{'serializer':>10} {'size':>5} {'params':>11} {'MB':>7} {'engines':>7} {'put s':>7} {'push s':>7} "
          f"{'load s':>7} {'MB/s':>7} {'s/engine':>8} {'vs 1 eng':>8} {'vs tensors':>10} {'vs packed':>9} "
          f"{'min put':>7} {'min push':>8} {'push runs s':>28}")
    by_key = {(r["serializer"], r["size"], r["engines"]): r for r in rows}
    for r in rows:
        one = by_key.get((r["serializer"], r["size"], 1))
        ref = by_key.get(("tensors", r["size"], r["engines"]))
        vs_one = f"{r['push_s'] / one['push_s']:.2f}x" if one else "-"
        vs_default = f"{ref['push_s'] / r['push_s']:.2f}x" if ref and r["serializer"] != "tensors" else "-"
        packed = by_key.get(("packed", r["size"], r["engines"]))
        vs_packed = f"{packed['push_s'] / r['push_s']:.2f}x" if packed and r["serializer"] != "packed" else "-"
        runs = ",".join(f"{x:.3f}" for x in r["pushes"])
        print(f"{r['serializer']:>10} {r['size']:>5} {r['params']:>11,} {r['mb']:>7.1f} {r['engines']:>7} "
              f"{r['put_s']:>7.3f} {r['push_s']:>7.3f} {r['load_s']:>7.3f} "
              f"{r['mb'] * r['engines'] / r['push_s']:>7.0f} {r['push_s'] / r['engines']:>8.3f} {vs_one:>8} "
              f"{vs_default:>10} {vs_packed:>9} {min(r['puts']):>7.3f} {min(r['pushes']):>8.3f} {runs:>28}")
    print("   params: unique parameters (tied embeddings once); MB: fp32 bytes of the pushed state dict (the tied")
    print("   lm_head is a second name for the embeddings); put s: ray.put of the dict alone; push s: push_weights")
    print("   (put + every engine's load_weights, engines in parallel); MB/s = MB x engines / push s (weights")
    print("   delivered into engines per second); s/engine = push s / engines; vs 1 eng = push time / the 1-engine")
    print("   push of that size; vs tensors / vs packed = that mode's push time / this one (> 1: faster);")
    print("   min put / min push: fastest of the repeats (the least disturbed by other processes);")
    print("   load s = min push - min put")
    print(f"   load average now: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (other processes skew wall times)")


if __name__ == "__main__":
    main()
