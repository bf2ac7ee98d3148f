"""`ray job submit` entry for supervised fine-tuning (Ray Train + DeepSpeed).

    ray job submit --working-dir . -- python jobs/train_sft.py \
        --config configs/train/sft_cluster.yaml name=my-run key=value ...

Inside a Ray job, `ray.init()` joins the cluster that runs the job. Resubmitting with the
same `name` and `storage_path` resumes from the latest checkpoint.
"""

from __future__ import annotations

import sys

from mnemoray.config.train import SFTConfig
from mnemoray.distributed.train.job import train_job_main
from mnemoray.distributed.train.sft import run_sft


def main(argv: list[str] | None = None) -> int:
    return train_job_main(argv, description=__doc__, config_cls=SFTConfig,
                          default_config="configs/train/sft_cluster.yaml", run=run_sft)


if __name__ == "__main__":
    sys.exit(main())
