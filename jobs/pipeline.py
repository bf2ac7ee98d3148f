"""`ray job submit` entry for the whole loop (synthesize -> build memory -> SFT -> GRPO ->
export -> serve -> evaluate -> baselines -> report.md), the same config as
`mnemoray pipeline run`:

    ray job submit --working-dir . -- python jobs/pipeline.py \
        --config configs/pipeline/cluster.yaml --out s3://BUCKET/runs/pipeline key=value ...

Inside a Ray job, `ray.init()` joins the cluster that runs the job. `--out` (or the config's
`out`) is an absolute path on shared storage or a URI (s3://, gs://, file://: the stages run
in a local work folder, `work_dir`, and are copied there as they finish); a relative path is
refused in a submitted job. Resubmitting with the same out skips the finished stages.
Exit 2 on bad input, 1 when a stage failed, 0 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mnemoray.config import ConfigError, load_config
from mnemoray.config.pipeline import PipelineConfig
from mnemoray.distributed.pipeline import run_pipeline
from mnemoray.loaders import DatasetError
from mnemoray.outputs import OutputError
from mnemoray.pipeline.graph import GraphError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path("configs/pipeline/cluster.yaml"))
    parser.add_argument("--out", default=None, help="output path or URI; overrides the config's out")
    parser.add_argument("--from", dest="from_stage", default=None, help="rerun this stage and every one after it")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(PipelineConfig, args.config, list(args.overrides)
                          + ([f"out={args.out}"] if args.out is not None else []))
        result = run_pipeline(cfg, config_file=str(args.config), out_key="--out" if args.out is not None else "out",
                              from_stage=args.from_stage, log=lambda msg: print(msg, file=sys.stderr))
    except (ConfigError, DatasetError, FileNotFoundError, GraphError, OutputError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for rec in result.records:
        detail = rec.error or rec.reason
        print(f"{rec.name}: {rec.status}{': ' + detail if detail else ''}")
    print(f"report: {result.out.rstrip('/')}/report.md")
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
