"""`ray job submit` entry for the retrieval suite (the main job).

    ray job submit --working-dir . -- python jobs/evaluate_retrieval.py \
        --config configs/eval/retrieval_cluster.yaml data_root_runs=... key=value ...

Inside a Ray job, `ray.init()` joins the cluster that runs the job.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from mnemoray.config import ConfigError, RetrievalSuiteConfig, load_config
from mnemoray.distributed.data.retrieval_suite import run_suite
from mnemoray.loaders import DatasetError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, default=Path("configs/eval/retrieval_cluster.yaml"))
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(RetrievalSuiteConfig, args.config, args.overrides)
        run_suite(cfg, Console(width=160))
    except (ConfigError, DatasetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
