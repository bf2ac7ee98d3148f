"""`ray job submit` entry for GRPO / ADRPO (Ray Train + DeepSpeed policy workers, rollout
engines and reward actors).

    ray job submit --working-dir . -- python jobs/train_grpo.py \
        --config configs/train/grpo_cluster.yaml name=my-run key=value ...

Inside a Ray job, `ray.init()` joins the cluster that runs the job. Resubmitting with the
same `name` and `storage_path` resumes from the latest checkpoint.
"""

from __future__ import annotations

import json
import sys

from mnemoray.config.grpo import GRPOConfig
from mnemoray.distributed.train.grpo import run_grpo
from mnemoray.distributed.train.job import train_job_main


def main(argv: list[str] | None = None) -> int:
    return train_job_main(
        argv, description=__doc__, config_cls=GRPOConfig, default_config="configs/train/grpo_cluster.yaml",
        run=run_grpo,
        extra_args=lambda p: p.add_argument("--reward-fn", default=None,
                                            help="PATH.py:FUNCTION, a verl-style compute_score"),
        extra_overrides=lambda a: [f"reward.reward={json.dumps(a.reward_fn)}"] if a.reward_fn else [])


if __name__ == "__main__":
    sys.exit(main())
