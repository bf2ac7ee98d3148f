"""`ray job submit` entry for GRPO / ADRPO (Ray Train + DeepSpeed policy workers, rollout
engines and reward actors).

    ray job submit --working-dir . -- python jobs/train_grpo.py \
        --config configs/train/grpo_cluster.yaml name=my-run key=value ...

Inside a Ray job, `ray.init()` joins the cluster that runs the job. Resubmitting with the
same `name` and `storage_path` resumes from the latest checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mnemoray.config import ConfigError, load_config
from mnemoray.config.grpo import GRPOConfig
from mnemoray.distributed.train.grpo import run_grpo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, default=Path("configs/train/grpo_cluster.yaml"))
    parser.add_argument("--reward-fn", default=None, help="PATH.py:FUNCTION, a verl-style compute_score")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args(argv)
    overrides = list(args.overrides) + ([f"reward.reward={json.dumps(args.reward_fn)}"] if args.reward_fn else [])
    try:
        cfg = load_config(GRPOConfig, args.config, overrides)
        result = run_grpo(cfg, log=lambda msg: print(msg, file=sys.stderr))
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"run_dir": str(result.run_dir), "export": str(result.export_dir),
                      "final": result.metrics, "error": result.error}, indent=2))
    return 1 if result.error else 0


if __name__ == "__main__":
    sys.exit(main())
