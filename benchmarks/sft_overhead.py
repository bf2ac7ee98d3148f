"""SFT step time under Ray Train vs the bare `deepspeed` launcher, ZeRO-2 vs ZeRO-3, tokens/s.

Same tiny model, same copy-task data, same per-worker loop (mnemoray.train.loop) in every
setting; only the launcher differs (and, under Ray Train, `data.shard`: stream = Ray Data
shard iterated during the steps, memory = shard read once). Prints figures and ratios side
by side; asserts nothing. Step time = median optimizer-step wall time from metrics.jsonl, skipping the
first steps (warm-up) and excluding checkpoint/export time.

    python benchmarks/sft_overhead.py [--steps 80] [--repeats 3] [--workers 2] [--out /tmp/sft_bench]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCAL = REPO / "configs" / "train" / "sft_local.yaml"


def _cfg(out: Path, name: str, zero: int, steps: int, workers: int, data: Path, tiny: Path, shard: str = "memory"):
    from mnemoray.config import load_config
    from mnemoray.config.train import SFTConfig

    return load_config(SFTConfig, LOCAL, [
        f"name={name}", f"out={out}", f"model.tiny_cache_dir={tiny}", f"data.train=[{{path: {data}}}]",
        "data.eval_fraction=0", "data.max_length=64", f"deepspeed.zero_stage={zero}",
        f"schedule.max_steps={steps}", f"schedule.save_every={steps}", "schedule.eval_every=0",
        f"ray.workers={workers}", "ray.max_failures=0", f"data.shard={shard}",
    ])


class LauncherIO:
    """WorkerIO for processes started by the deepspeed launcher: rows sharded by rank, no resume."""

    def __init__(self, rows: list[dict], micro: int, pad_id: int):
        import torch.distributed as dist

        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.rows = rows[self.rank::self.world_size][: len(rows) // self.world_size]
        self.micro, self.pad_id = micro, pad_id

    def train_batches(self, epoch):
        from mnemoray.train.tokenize import epoch_order, held_batches

        return held_batches(self.rows, self.micro, self.pad_id, epoch_order(len(self.rows), 0, epoch))

    def eval_batches(self):
        return None

    def resume_dir(self):
        import contextlib

        return contextlib.nullcontext(None)

    def save(self, metrics, directory, step):
        pass


def _tokenized_rows(cfg, model_path: str) -> list[dict]:
    from transformers import AutoTokenizer

    from mnemoray.train.formats import read_samples
    from mnemoray.train.tokenize import encode_chat

    tok = AutoTokenizer.from_pretrained(model_path)
    rows = []
    for s in read_samples(cfg.data.train[0].path):
        enc = encode_chat(tok, s["messages"], cfg.data.max_length)
        rows.append({"input_ids": enc.input_ids, "labels": enc.labels})
    return rows


def worker_main(args: argparse.Namespace) -> None:
    """Runs inside each process of the deepspeed launcher."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed
    from transformers import AutoTokenizer

    from mnemoray.train.loop import train_worker

    deepspeed.init_distributed(dist_backend="gloo")
    cfg = _cfg(Path(args.out), args.name, args.zero, args.steps, args.workers, Path(args.data), Path(args.tiny))
    model_path = cfg.resolve_model_path()
    tok = AutoTokenizer.from_pretrained(model_path)
    io = LauncherIO(_tokenized_rows(cfg, model_path), cfg.schedule.micro_batch_size, tok.pad_token_id)
    train_worker(cfg, io, model_path, args.steps)


def _summary(run_dir: Path, skip: int = 3) -> dict:
    rows = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    steps = [r for r in rows if "step_time_s" in r][skip:]
    return {"step_s": statistics.median(r["step_time_s"] for r in steps),
            "tok_s": statistics.median(r["tokens_per_s"] for r in steps), "steps": len(steps),
            "wait_s": statistics.median(r.get("data_wait_s", 0.0) for r in steps)}


def run_launcher(args, name: str, zero: int, workers: int) -> tuple[dict, float]:
    cmd = [shutil.which("deepspeed") or "deepspeed", "--num_accelerators", str(workers),
           "--master_port", str(29600 + zero * 10 + workers), __file__, "--worker",
           "--name", name, "--zero", str(zero), "--steps", str(args.steps), "--workers", str(workers),
           "--out", str(args.out), "--data", str(args.data), "--tiny", str(args.tiny)]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"launcher run {name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return _summary(Path(args.out) / name), wall


def run_ray(args, name: str, zero: int, workers: int, shard: str) -> tuple[dict, float]:
    from mnemoray.distributed.train.sft import run_sft

    cfg = _cfg(Path(args.out), name, zero, args.steps, workers, Path(args.data), Path(args.tiny), shard)
    t0 = time.perf_counter()
    result = run_sft(cfg, log=lambda m: None)
    wall = time.perf_counter() - t0
    if result.error:
        raise RuntimeError(f"ray run {name} failed: {result.error}")
    return _summary(cfg.run_dir), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs per setting (median reported)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/mnemoray_sft_bench"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--name", default="")
    parser.add_argument("--zero", type=int, default=2)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--tiny", type=Path, default=None)
    parser.add_argument("--local_rank", type=int, default=0)  # added by the deepspeed launcher
    args = parser.parse_args()
    if args.worker:
        worker_main(args)
        return

    from mnemoray.llm.tiny import ensure_tiny
    from mnemoray.train.demo import write_copy_task

    args.out = args.out.resolve()
    shutil.rmtree(args.out, ignore_errors=True)
    args.data = write_copy_task(args.out / "copy.jsonl", n=1024)
    args.tiny = args.out / "tiny"
    ensure_tiny(args.tiny)
    os.environ["DS_ACCELERATOR"] = "cpu"
    import ray

    ray.init(num_cpus=args.workers, include_dashboard=False,
             runtime_env={"env_vars": {"DS_ACCELERATOR": "cpu", "TOKENIZERS_PARALLELISM": "false"}})
    runs: dict[tuple[str, int], list[tuple[dict, float]]] = {}
    for rep in range(args.repeats):  # interleaved, so a noisy minute hits every setting alike
        for zero in (2, 3):
            runs.setdefault(("launcher", zero), []).append(
                run_launcher(args, f"launcher-z{zero}-r{rep}", zero, args.workers))
            for shard in ("stream", "memory"):
                runs.setdefault((f"ray/{shard}", zero), []).append(
                    run_ray(args, f"ray-{shard}-z{zero}-r{rep}", zero, args.workers, shard))
    ray.shutdown()
    results = {key: ({k: statistics.median(s[k] for s, _ in reps) for k in ("step_s", "wait_s", "tok_s")}
                     | {"spread": (min(s["step_s"] for s, _ in reps), max(s["step_s"] for s, _ in reps))},
                     statistics.median(w for _, w in reps)) for key, reps in runs.items()}

    print(f"\nSFT overhead: tiny qwen2, {args.workers} CPU workers, {args.steps} steps, micro-batch 8, fp32, "
          f"median of {args.repeats} interleaved runs\n")
    print(f"{'setting':<24}{'step ms':>10}{'min-max ms':>14}{'data wait ms':>14}{'tokens/s':>12}{'wall s':>10}")
    for (launcher, zero), (s, wall) in results.items():
        lo, hi = s["spread"]
        print(
            f"{launcher + ' ZeRO-' + str(zero):<24}{s['step_s'] * 1000:>10.1f}{f'{lo * 1000:.1f}-{hi * 1000:.1f}':>14}"
            f"{s['wait_s'] * 1000:>14.1f}{s['tok_s']:>12.0f}{wall:>10.1f}"
        )
    print()
    for zero in (2, 3):
        bare_s = results[("launcher", zero)][0]["step_s"]
        for shard in ("stream", "memory"):
            ray_s = results[(f"ray/{shard}", zero)][0]["step_s"]
            print(f"ZeRO-{zero}: Ray Train (data.shard={shard}) / bare launcher step time = {ray_s / bare_s:.2f} "
                  f"(overhead {100 * (ray_s / bare_s - 1):+.1f} %; goal <= +10 %)")
    for launcher in ("launcher", "ray/stream", "ray/memory"):
        z3, z2 = results[(launcher, 3)][0]["step_s"], results[(launcher, 2)][0]["step_s"]
        print(f"{launcher}: ZeRO-3 / ZeRO-2 step time = {z3 / z2:.2f}")


if __name__ == "__main__":
    sys.exit(main())
