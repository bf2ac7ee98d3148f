"""GRPO step time and reward: mnemoray (`run_grpo` on Ray) vs Hugging Face TRL's GRPOTrainer.

Both train the same model (the tiny random Qwen2, and a random Qwen2 of about 100M
parameters with the tiny model's tokenizer) on the same toy prompts, in the same order,
with the same group size n, prompts per step, completion length, KL coefficient (k3
estimator), clip range, learning rate (constant, AdamW betas 0.9/0.95, grad clip 1),
sampling (temperature 1, top-p 1, no top-k) and reward (share of non-space characters
that are 'e': mnemoray's keyword-count toy reward; TRL gets a standalone copy). TRL runs
in its own venv (scripts/setup_bench_trl.sh) as a subprocess, benchmarks/peers/trl_grpo.py;
without that venv only mnemoray is measured.

Step time = mean wall time of a whole step (weight sync, generation, rewards, reference and
old-policy scoring, update) over the steps after the first `--skip` ones (warm-up), from
mnemoray's metrics.jsonl and a TRL callback (on_step_begin to on_step_end). Checkpoint and
export time is outside both. TRL runs once per `--trl-threads` count (default 1 and the
core count) and the ratios use its faster run. Prints figures and ratios (mnemoray / TRL)
and the differences that remain between the two; asserts nothing.

    scripts/setup_bench_trl.sh                       # once: .venv-bench-trl/ with trl (optional)
    python benchmarks/grpo_step.py --quick           # smoke run: tiny model, n=4, 4 steps
    python benchmarks/grpo_step.py --workers 2 1     # tiny and ~100M model, n 4 and 8, 2 and 1 policy workers
    python benchmarks/grpo_step.py --workers 1 --threads auto --zero-100m 0 --rollout actors colocated
    (more: --models tiny 100m --n 4 8 --zero-tiny 2 0 --steps-tiny 8 --steps-100m 3 --trl-threads 1 2 --out DIR)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCAL = REPO / "configs" / "train" / "grpo_local.yaml"
PROMPTS = REPO / "configs" / "train" / "data" / "toy_prompts.jsonl"
PEER = REPO / "benchmarks" / "peers" / "trl_grpo.py"
TRL_PYTHON = REPO / ".venv-bench-trl" / "bin" / "python"
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error"}
PARTS = ("generate_s", "reward_s", "ref_s", "update_s", "sync_s")
MODEL_LR = {"tiny": 1e-2, "100m": 1e-5}
PROMPTS_PER_STEP, MAX_NEW_TOKENS, BETA, EPS_LOW, EPS_HIGH, MICRO_BATCH = 2, 32, 0.02, 0.2, 0.28, 8


def build_qwen2_100m(out: Path, tokenizer_from: Path, seed: int = 0) -> tuple[Path, int]:
    """A random Qwen2 of about 100M parameters with the tiny model's tokenizer (files copied as they are)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, Qwen2Config

    target = out / "qwen2-100m"
    if not (target / "config.json").exists():
        tok = AutoTokenizer.from_pretrained(tokenizer_from)
        config = Qwen2Config(
            vocab_size=len(tok), hidden_size=768, intermediate_size=2560, num_hidden_layers=12,
            num_attention_heads=12, num_key_value_heads=12, head_dim=64, max_position_embeddings=4096,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
            tie_word_embeddings=True, dtype="float32")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                                   pad_token_id=tok.pad_token_id)
        tmp = out / ".qwen2-100m-tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp, safe_serialization=True)
        weights = {"config.json", "generation_config.json"}
        for f in tokenizer_from.iterdir():  # the tiny checkpoint's tokenizer files, byte for byte
            if f.is_file() and f.name not in weights and not f.name.endswith(".safetensors"):
                shutil.copy2(f, tmp / f.name)
        os.rename(tmp, target)
    return target, param_count(target)


def param_count(model_dir: Path) -> int:
    from safetensors import safe_open

    total = 0
    for f in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            total += sum(math.prod(st.get_slice(key).get_shape()) for key in st.keys())
    return total


def _cfg(args, name: str, model_path: Path, n: int, steps: int, lr: float, workers: int, zero: int,
         threads: str = "auto", colocate: bool = False):
    from mnemoray.config import load_config
    from mnemoray.config.grpo import GRPOConfig

    return load_config(GRPOConfig, LOCAL, [
        f"name={name}", f"out={args.out / 'runs'}", f"model.path={model_path}", "model.tiny=null",
        f"environment.path={PROMPTS}", "reward.reward=keyword-count", f"rollout.n={n}",
        f"rollout.prompts_per_step={PROMPTS_PER_STEP}", f"rollout.max_new_tokens={MAX_NEW_TOKENS}",
        "rollout.temperature=1.0", "rollout.top_p=1.0", f"algorithm.kl_coef={BETA}", "algorithm.kl_estimator=k3",
        f"algorithm.eps_low={EPS_LOW}", f"algorithm.eps_high={EPS_HIGH}", "algorithm.loss_agg=token-mean",
        "algorithm.advantage_scale=std", "algorithm.epochs=1", "algorithm.minibatches=1",
        f"algorithm.micro_batch_size={MICRO_BATCH}", f"optim.lr={lr}", "optim.warmup_steps=0",
        "optim.min_lr_ratio=1.0", "optim.grad_clip=1.0", "optim.weight_decay=0.0", "optim.betas=[0.9, 0.95]",
        f"schedule.steps={steps}", f"schedule.save_every={steps}", f"schedule.seed={args.seed}",
        f"deepspeed.zero_stage={zero}", "deepspeed.dtype=fp32", f"ray.workers={workers}", "ray.num_cpus=2",
        "ray.max_failures=0", f"ray.torch_threads={threads}", f"rollout.threads={threads}",
        f"rollout.colocate={str(colocate).lower()}",
    ])


def ordered_prompts(cfg, steps: int, path: Path) -> Path:
    """The prompts mnemoray uses at steps 1..steps, in that order, for TRL (which reads them unshuffled)."""
    from mnemoray.distributed.train.grpo import load_run_prompts, step_prompts

    prompts, _ = load_run_prompts(cfg)
    with path.open("w", encoding="utf-8") as fh:
        for step in range(1, steps + 1):
            for _, p in step_prompts(prompts, step, cfg.rollout.prompts_per_step, cfg.schedule.seed):
                fh.write(json.dumps({"id": p.id, "prompt": [dict(m) for m in p.messages],
                                     "ground_truth": p.ground_truth}) + "\n")
    return path


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def run_mnemoray(args, name: str, model_path: Path, n: int, steps: int, lr: float, workers: int, zero: int,
                 skip: int, threads: str = "auto", colocate: bool = False) -> dict:
    import ray

    from mnemoray.distributed.runtime import WORKER_ENV
    from mnemoray.distributed.train.grpo import run_grpo

    cfg = _cfg(args, name, model_path, n, steps, lr, workers, zero, threads, colocate)
    shutil.rmtree(cfg.run_dir, ignore_errors=True)
    t0 = time.perf_counter()
    # A Ray of our own per run (address="local": never join another process's cluster on this machine),
    # shut down before TRL runs so its idle processes do not share the cores with TRL.
    ray.init(address="local", num_cpus=cfg.ray.num_cpus, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {**WORKER_ENV, "DS_ACCELERATOR": "cpu"}})
    try:
        result = run_grpo(cfg, log=lambda m: None)
        error = result.error
    except Exception as exc:  # noqa: BLE001 - a failed run is reported in the table, the others still run
        error = f"{type(exc).__name__}: {exc}"
    finally:
        ray.shutdown()
    wall = time.perf_counter() - t0
    if error:
        return {"error": error, "wall_s": wall, "load": os.getloadavg()[0]}
    rows = [json.loads(ln) for ln in (cfg.run_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    rows = [r for r in rows if "timing" in r]
    kept = rows[skip:]
    out = {"wall_s": wall, "load": os.getloadavg()[0], "steps": len(rows), "measured": len(kept),
           "step_s": _mean([r["timing"]["step_s"] for r in kept]),
           "min_s": min((r["timing"]["step_s"] for r in kept), default=float("nan")),
           "max_s": max((r["timing"]["step_s"] for r in kept), default=float("nan")),
           "rewards": [r["reward_mean"] for r in rows]}
    for part in PARTS:
        out[part] = _mean([r["timing"].get(part, 0.0) for r in kept])
    return out


def run_trl(args, name: str, model_path: Path, prompts: Path, n: int, steps: int, lr: float, threads: int,
            skip: int) -> dict:
    result_path = args.out / "trl" / f"{name}-t{threads}.json"
    cmd = [str(args.trl_python), str(PEER), "--model", str(model_path), "--prompts", str(prompts),
           "--n", str(n), "--prompts-per-step", str(PROMPTS_PER_STEP), "--max-new-tokens", str(MAX_NEW_TOKENS),
           "--beta", str(BETA), "--lr", str(lr), "--steps", str(steps), "--seed", str(args.seed),
           "--micro-batch-size", str(MICRO_BATCH), "--eps-low", str(EPS_LOW), "--eps-high", str(EPS_HIGH),
           "--loss-type", "bnpo", "--scale-rewards", "group", "--threads", str(threads),
           "--out", str(result_path)]
    env = {**os.environ, **OFFLINE_ENV}
    env.pop("VIRTUAL_ENV", None)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, cwd=REPO)
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not result_path.exists():
        return {"error": f"exit {proc.returncode}: {(proc.stderr or proc.stdout)[-1500:]}", "wall_s": wall,
                "load": os.getloadavg()[0], "threads": threads}
    data = json.loads(result_path.read_text())
    times = data["step_times"]
    kept = times[skip:]
    return {"wall_s": wall, "load": os.getloadavg()[0], "steps": len(times), "measured": len(kept),
            "step_s": _mean(kept), "threads": threads,
            "min_s": min(kept, default=float("nan")), "max_s": max(kept, default=float("nan")),
            "rewards": data["rewards"], "settings": data["settings"]}


def _f(value: float | None, fmt: str = ".3f") -> str:
    return "-" if value is None or value != value else format(value, fmt)


def _error_line(error: str) -> str:
    lines = [ln.strip() for ln in error.strip().splitlines() if ln.strip()]
    picked = next((ln for ln in lines if "out of memory" in ln.lower() or "killed" in ln.lower()), None)
    picked = picked or next((ln for ln in reversed(lines) if "Error" in ln), lines[-1] if lines else "")
    return picked[:160]


def fastest(trl_runs: list[dict]) -> dict | None:
    """The TRL run with the lowest mean step time (the peer at its best thread count)."""
    ok = [r for r in trl_runs if "error" not in r]
    return min(ok, key=lambda r: r["step_s"]) if ok else None


def print_table(title: str, rows: list[tuple[str, dict]], trl_runs: list[dict]) -> None:
    trl = fastest(trl_runs)
    print(f"\n{title}")
    head = (f"{'implementation':<42}{'step s':>8}{'min-max s':>13}{'generate':>10}{'reward':>8}{'ref+old':>9}"
            f"{'update':>8}{'sync':>7}{'wall s':>8}{'reward 1st':>12}{'last':>7}{'vs TRL':>8}{'load1':>7}")
    print(head)
    print("-" * len(head))
    trl_rows = [(f"TRL (1 process, {r['threads']} thread{'s' if r['threads'] > 1 else ''})", r) for r in trl_runs]
    for label, r in rows + trl_rows:
        if "error" in r:
            print(f"{label:<42}FAILED after {r['wall_s']:.0f} s: {_error_line(r['error'])}")
            continue
        is_trl = label.startswith("TRL")
        parts = "".join(f"{'-' if is_trl else _f(r.get(p)):>{w}}" for p, w in zip(PARTS, (10, 8, 9, 8, 7)))
        ratio = "-"
        if trl is not None and not is_trl:
            ratio = f"{r['step_s'] / trl['step_s']:.2f}"
        rewards = r["rewards"]
        print(f"{label:<42}{_f(r['step_s']):>8}{_f(r['min_s'], '.2f') + '-' + _f(r['max_s'], '.2f'):>13}{parts}"
              f"{_f(r['wall_s'], '.1f'):>8}{_f(rewards[0] if rewards else None):>12}"
              f"{_f(rewards[-1] if rewards else None):>7}{ratio:>8}{_f(r['load'], '.1f'):>7}")


def print_summary(results: list[tuple[str, int, str, dict]], trls: dict[tuple[str, int], list[dict]],
                  wall: float) -> None:
    print(f"\nsummary: step s = mean after warm-up; TRL = its fastest thread count (thr); ratio = mnemoray / TRL "
          f"step time; reward = mean reward of the first -> last step; benchmark wall {wall:.0f} s")
    head = (f"{'model':<7}{'n':>3}  {'mnemoray setting':<30}{'mnemoray s':>11}{'TRL s':>9}{'thr':>4}{'ratio':>7}"
            f"{'reward mnemoray':>18}{'reward TRL':>15}")
    print(head)
    print("-" * len(head))
    for model, n, setting, r in results:
        trl = fastest(trls.get((model, n), []))
        if "error" in r:
            print(f"{model:<7}{n:>3}  {setting:<30}  FAILED")
            continue
        ratio = f"{r['step_s'] / trl['step_s']:.2f}" if trl else "-"
        span = f"{_f(r['rewards'][0])} -> {_f(r['rewards'][-1])}" if r["rewards"] else "-"
        span_trl = f"{_f(trl['rewards'][0])} -> {_f(trl['rewards'][-1])}" if trl and trl["rewards"] else "-"
        print(f"{model:<7}{n:>3}  {setting:<30}{_f(r['step_s']):>11}{_f(trl['step_s'] if trl else None):>9}"
              f"{trl['threads'] if trl else '-':>4}{ratio:>7}{span:>18}{span_trl:>15}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny model, n=4, 4 steps")
    parser.add_argument("--models", nargs="+", choices=("tiny", "100m"), default=["tiny", "100m"])
    parser.add_argument("--n", nargs="+", type=int, default=[4, 8], help="group sizes (completions per prompt)")
    parser.add_argument("--workers", nargs="+", type=int, default=[2],
                        help="mnemoray policy-worker counts to run (e.g. 2 1; TRL is always one process)")
    parser.add_argument("--zero-tiny", nargs="+", type=int, default=[2], choices=(0, 1, 2),
                        help="mnemoray DeepSpeed ZeRO stages for the tiny model (grpo_local.yaml: 2)")
    parser.add_argument("--zero-100m", nargs="+", type=int, default=[2], choices=(0, 1, 2),
                        help="ZeRO stages for the 100M model")
    parser.add_argument("--threads", nargs="+", default=["1"],
                        help="mnemoray torch threads per policy worker and rollout engine (ray.torch_threads, "
                             "rollout.threads): 1 = the configs' default; auto = the node's CPUs / the actors of a "
                             "phase; e.g. --threads 1 auto runs both")
    parser.add_argument("--rollout", nargs="+", choices=("actors", "colocated"), default=["actors"],
                        help="actors = a rollout engine actor that gets the weights every step (the configs' "
                             "default); colocated = rank 0 samples with its own module (rollout.colocate: no sync)")
    parser.add_argument("--steps-tiny", type=int, default=8)
    parser.add_argument("--steps-100m", type=int, default=3)
    parser.add_argument("--skip", type=int, default=None,
                        help="warm-up steps left out of the mean step time (default: 2, or 1 under 6 steps)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trl-python", type=Path, default=TRL_PYTHON)
    parser.add_argument("--trl-threads", nargs="+", type=int, default=sorted({1, os.cpu_count() or 1}),
                        help="torch thread counts to run TRL with; ratios use the fastest (on a busy machine 2 "
                             "OpenMP threads on 2 cores can make the tiny model's small ops far slower than 1)")
    parser.add_argument("--no-trl", action="store_true", help="measure mnemoray only")
    parser.add_argument("--out", type=Path, default=Path("/tmp/mnemoray_grpo_bench"))
    args = parser.parse_args()
    if args.quick:
        args.models, args.n, args.steps_tiny = ["tiny"], [4], 4
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("DS_ACCELERATOR", "cpu")

    from mnemoray.llm.tiny import ensure_tiny

    args.out = args.out.resolve()
    for sub in ("runs", "trl", "prompts"):
        shutil.rmtree(args.out / sub, ignore_errors=True)
        (args.out / sub).mkdir(parents=True)
    tiny = ensure_tiny(args.out / "models")
    models = {"tiny": (tiny, param_count(tiny), args.steps_tiny, args.zero_tiny)}
    if "100m" in args.models:
        path, count = build_qwen2_100m(args.out / "models", tiny)
        models["100m"] = (path, count, args.steps_100m, args.zero_100m)
    use_trl = not args.no_trl and args.trl_python.exists()
    if not args.no_trl and not use_trl:
        print(f"note: {args.trl_python} not found, TRL skipped (create it with scripts/setup_bench_trl.sh)")

    cores = os.cpu_count()
    print(f"GRPO step: mnemoray run_grpo vs TRL {'GRPOTrainer' if use_trl else '(skipped)'} on {cores} CPU cores, "
          f"fp32; {PROMPTS_PER_STEP} prompts/step, at most {MAX_NEW_TOKENS} new tokens, beta {BETA} (k3 KL), "
          f"clip {EPS_LOW}/{EPS_HIGH}, temperature 1, top-p 1, AdamW (0.9, 0.95) constant lr, grad clip 1, "
          f"token-mean loss, std-scaled group advantages, reward = share of 'e' among non-space reply characters")
    print(f"mnemoray: W policy workers (Ray Train + DeepSpeed, each also holding the reference model) + 1 rollout "
          f"engine (HF generate) + 2 reward actors, all on the same {cores} cores; thr = torch threads per worker "
          f"and engine (auto: {cores} / the actors of a phase on the node); "
          f"TRL: one process, torch threads {'/'.join(map(str, args.trl_threads))}. load1 = 1-minute load average "
          f"after the run.")

    print("differences that remain: mnemoray samples on a separate "
          "rollout engine that gets the weights every step (sync), TRL samples with the training model (as "
          "mnemoray does with --rollout colocated); "
          "different sampling RNGs (same prompts per step, different completions, so step-1 rewards differ); "
          "token-mean per worker micro-batch averaged over workers (mnemoray) vs per micro-batch of "
          f"{MICRO_BATCH} averaged over accumulation (TRL loss_type bnpo); advantage eps 1e-6 vs 1e-4; rewards "
          "from Ray reward actors vs in-process.")
    results: list[tuple[str, int, str, dict]] = []  # (model, n, mnemoray setting, figures)
    trls: dict[tuple[str, int], list[dict]] = {}
    t_all = time.perf_counter()
    for model in args.models:
        path, count, steps, zeros = models[model]
        skip = args.skip if args.skip is not None else (2 if steps >= 6 else 1)
        lr = MODEL_LR[model]
        for n in args.n:
            tag = f"{model}-n{n}"
            prompt_file = ordered_prompts(_cfg(args, tag, path, n, steps, lr, 1, zeros[0]), steps,
                                          args.out / "prompts" / f"{tag}.jsonl")
            trl_runs = [run_trl(args, tag, path, prompt_file, n, steps, lr, t, skip)
                        for t in (args.trl_threads if use_trl else [])]
            trls[(model, n)] = trl_runs
            rows = []
            for workers in args.workers:
                for zero in zeros:
                    for threads in args.threads:
                        for rollout in args.rollout:
                            colocate = rollout == "colocated"
                            setting = f"{workers}w, ZeRO-{zero}, thr {threads}" + (", coloc" if colocate else "")
                            r = run_mnemoray(args, f"{tag}-w{workers}-z{zero}-t{threads}-{rollout}", path, n, steps,
                                             lr, workers, zero, skip, threads, colocate)
                            rows.append((f"mnemoray ({setting})", r))
                            results.append((model, n, setting, r))
            title = (f"{model} qwen2 ({count / 1e6:.1f}M params), n={n} ({PROMPTS_PER_STEP * n} completions/step), "
                     f"lr {lr:g}, {steps} steps; step time = mean of steps {skip + 1}-{steps} "
                     f"(first {skip} = warm-up); ref+old = reference and old-policy log-probs")
            print_table(title, rows, trl_runs)

    print_summary(results, trls, time.perf_counter() - t_all)
    return 0


if __name__ == "__main__":
    sys.exit(main())
