"""`ray job submit` entry for the retrieval suite (the main job).

    ray job submit --working-dir . -- python jobs/evaluate_retrieval.py \
        --config configs/eval/retrieval_cluster.yaml --out s3://BUCKET/runs/retrieval key=value ...

Inside a Ray job, `ray.init()` joins the cluster that runs the job. `--out` (or the config's
`out`) is a path or a URI (s3://, gs://, file://: written locally, then copied there); a
relative path is refused in a submitted job, where it would land in Ray's temporary copy of
the working directory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from mnemoray.config import ConfigError, RetrievalSuiteConfig, load_config
from mnemoray.distributed.data.retrieval_suite import run_suite
from mnemoray.loaders import DatasetError
from mnemoray.outputs import OutputError, output_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, default=Path("configs/eval/retrieval_cluster.yaml"))
    parser.add_argument("--out", default=None, help="output path or URI (s3://, gs://); overrides the config's out")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(RetrievalSuiteConfig, args.config, args.overrides)
        target, key = (args.out, "--out") if args.out is not None else (str(cfg.out), "out")
        with output_dir(target, key=key) as local:
            run_suite(cfg.model_copy(update={"out": local}), Console(width=160))
        print(f"outputs: {target}")
    except (ConfigError, DatasetError, OutputError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
