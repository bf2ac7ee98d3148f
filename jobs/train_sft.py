"""`ray job submit` entry for supervised fine-tuning (Ray Train + DeepSpeed).

    ray job submit --working-dir . -- python jobs/train_sft.py \
        --config configs/train/sft_cluster.yaml name=my-run key=value ...

Inside a Ray job, `ray.init()` joins the cluster that runs the job. Resubmitting with the
same `name` and `storage_path` resumes from the latest checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mnemoray.config import ConfigError, load_config
from mnemoray.config.train import SFTConfig
from mnemoray.distributed.train.sft import run_sft
from mnemoray.loaders import DatasetError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, default=Path("configs/train/sft_cluster.yaml"))
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(SFTConfig, args.config, args.overrides)
        result = run_sft(cfg, log=lambda msg: print(msg, file=sys.stderr))
    except (ConfigError, DatasetError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"run_dir": str(result.run_dir), "export": str(result.export_dir),
                      "final": result.metrics, "error": result.error}, indent=2))
    return 1 if result.error else 0


if __name__ == "__main__":
    sys.exit(main())
