"""Peer for benchmarks/grpo_step.py: GRPO steps with Hugging Face TRL's GRPOTrainer on CPU.

Runs with the python of .venv-bench-trl/ (scripts/setup_bench_trl.sh), never inside
mnemoray's venv, and imports nothing from mnemoray. It trains a local checkpoint on a
prompts JSONL ({"prompt": [messages], "ground_truth"?, ...}, one line per prompt, used
in file order: the caller writes the prompts of every step in the order mnemoray sees
them), with a reward of the same logic as mnemoray's `keyword-count` toy reward, and
writes the wall time and mean reward of every optimizer step to a JSON file:

    .venv-bench-trl/bin/python benchmarks/peers/trl_grpo.py --model PATH --prompts FILE.jsonl \
        --n 4 --prompts-per-step 2 --max-new-tokens 32 --beta 0.02 --lr 1e-2 --steps 8 --out trl.json

One optimizer step per generation batch (prompts_per_step x n completions), no reuse of a
batch (num_iterations 1), so TRL skips the separate old-log-prob pass (ratio = 1, the
clipped loss reduces to the policy gradient), just as a single-epoch mnemoray step does
in effect (so does mnemoray: on-policy updates use the policy's own detached log-probs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

DEFAULT_TARGET = "e"


def share_of_target(text: str, target: str = DEFAULT_TARGET) -> float:
    """Share of the non-space characters of `text` that are in `target` (0 for an empty reply)."""
    chars = [c for c in text if not c.isspace()]
    wanted = set(target) if target else set(DEFAULT_TARGET)
    return sum(c in wanted for c in chars) / len(chars) if chars else 0.0


def completion_text(completion) -> str:
    """A TRL completion: a string, or (conversational prompts) a list of messages."""
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content") or "" for m in completion if m.get("role", "assistant") == "assistant")


class KeywordReward:
    """TRL reward function (prompts, completions, **columns) -> one float per completion.

    Records the mean reward of every call: one call per generation batch = per optimizer step here.
    """

    __name__ = "keyword_count"

    def __init__(self) -> None:
        self.means: list[float] = []

    def __call__(self, prompts, completions, ground_truth=None, **kwargs) -> list[float]:
        truths = ground_truth if ground_truth is not None else [DEFAULT_TARGET] * len(completions)
        scores = [share_of_target(completion_text(c), t if isinstance(t, str) else DEFAULT_TARGET)
                  for c, t in zip(completions, truths)]
        self.means.append(sum(scores) / len(scores) if scores else 0.0)
        return scores


def read_prompts(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            rows.append({"prompt": record["prompt"], "ground_truth": record.get("ground_truth") or DEFAULT_TARGET})
    if not rows:
        raise SystemExit(f"{path}: no prompts")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="local Hugging Face checkpoint folder (with tokenizer)")
    parser.add_argument("--prompts", type=Path, required=True, help="JSONL, used in file order")
    parser.add_argument("--n", type=int, default=4, help="completions per prompt (num_generations)")
    parser.add_argument("--prompts-per-step", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=32, help="max_completion_length")
    parser.add_argument("--beta", type=float, default=0.02, help="KL coefficient (k3 estimator, as mnemoray)")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--micro-batch-size", type=int, default=8,
                        help="samples per forward pass (per_device_train_batch_size); the rest is grad accumulation")
    parser.add_argument("--eps-low", type=float, default=0.2)
    parser.add_argument("--eps-high", type=float, default=0.28)
    parser.add_argument("--loss-type", default="bnpo", help="TRL loss_type (bnpo = token mean per micro-batch)")
    parser.add_argument("--scale-rewards", default="group", help="TRL scale_rewards (group = GRPO's std scaling)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads of this process")
    parser.add_argument("--out", type=Path, required=True, help="JSON with step_times, rewards, settings")
    args = parser.parse_args(argv)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers 5 renames (gradient_checkpointing)
    import torch
    import transformers
    import trl
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.set_num_threads(args.threads)
    samples = args.prompts_per_step * args.n
    micro = min(args.micro_batch_size, samples)
    while samples % micro:  # the largest micro-batch <= micro_batch_size that splits the step evenly
        micro -= 1
    accum = samples // micro

    rows = read_prompts(args.prompts)
    needed = args.steps * args.prompts_per_step
    rows = (rows * (needed // len(rows) + 1))[:needed]  # exactly the prompts of `steps` steps, in order

    class StepClock(TrainerCallback):
        """Wall time of each optimizer step: generation, rewards, reference, loss, backward and step."""

        def __init__(self) -> None:
            self.times: list[float] = []
            self.logs: list[dict] = []
            self._t0 = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self._t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter() - self._t0)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:
                self.logs.append({"step": state.global_step, **{k: v for k, v in logs.items()
                                                                  if isinstance(v, int | float)}})

    clock, reward = StepClock(), KeywordReward()
    with tempfile.TemporaryDirectory(prefix="trl-grpo-") as tmp:
        config = GRPOConfig(
            output_dir=tmp, use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False,
            seed=args.seed, data_seed=args.seed, max_steps=args.steps, learning_rate=args.lr,
            lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.95,
            max_grad_norm=1.0, optim="adamw_torch",
            per_device_train_batch_size=micro, gradient_accumulation_steps=accum, steps_per_generation=accum,
            num_generations=args.n, num_iterations=1, max_completion_length=args.max_new_tokens,
            temperature=1.0, top_p=1.0, top_k=0, beta=args.beta, epsilon=args.eps_low,
            epsilon_high=args.eps_high, loss_type=args.loss_type, scale_rewards=args.scale_rewards,
            mask_truncated_completions=False, shuffle_dataset=False, use_vllm=False,
            model_init_kwargs={"dtype": "float32"},
            logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
            dataloader_num_workers=0, log_completions=False,
        )
        tokenizer = AutoTokenizer.from_pretrained(args.model)
        trainer = GRPOTrainer(model=args.model, reward_funcs=[reward], args=config,
                              train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                              callbacks=[clock])
        t0 = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - t0

    logged = [r["reward"] for r in clock.logs if "reward" in r]
    result = {
        "step_times": clock.times,
        "rewards": reward.means,
        "logged_rewards": logged,
        "train_s": train_s,
        "logs": clock.logs,
        "settings": {
            "model": args.model, "n": args.n, "prompts_per_step": args.prompts_per_step,
            "max_completion_length": args.max_new_tokens, "beta": args.beta, "lr": args.lr, "steps": args.steps,
            "seed": args.seed, "per_device_train_batch_size": micro, "gradient_accumulation_steps": accum,
            "steps_per_generation": accum, "num_iterations": 1, "loss_type": args.loss_type,
            "scale_rewards": args.scale_rewards, "epsilon": args.eps_low, "epsilon_high": args.eps_high,
            "temperature": 1.0, "top_p": 1.0, "top_k": 0, "lr_scheduler_type": "constant",
            "adam_betas": [0.9, 0.95], "max_grad_norm": 1.0, "threads": args.threads, "processes": 1,
            "trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__,
        },
        "notes": [
            "on-policy (num_iterations 1, steps_per_generation = gradient_accumulation_steps): no separate "
            "old-policy forward pass, the ratio is exp(logp - logp.detach()) = 1",
            f"loss_type {args.loss_type}: token mean per micro-batch of {micro}, averaged over {accum} "
            "accumulation step(s); mnemoray's token-mean is per worker micro-batch, averaged over workers",
            "advantages (r - group mean) / (unbiased group std + 1e-4); mnemoray uses eps 1e-6 and sets "
            "zero-variance groups to exactly 0",
            "generation with the training model itself (transformers generate), no weight sync",
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({"out": str(args.out), "steps": len(clock.times), "train_s": round(train_s, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
