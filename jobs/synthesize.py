"""`ray job submit` entry for RoleMemo-style dataset synthesis.

    ray job submit --working-dir . -- python jobs/synthesize.py \
        --config configs/synth/rolememo_cluster.yaml limit=2000 key=value ...

Inside a Ray job, `ray.init()` joins the cluster that runs the job. Resubmitting with the
same `out` resumes: finished parts are skipped and nothing is duplicated.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mnemoray.config import ConfigError, load_config
from mnemoray.config.synth import RoleMemoConfig
from mnemoray.distributed.data.synth_rolememo import run_rolememo
from mnemoray.loaders import DatasetError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, default=Path("configs/synth/rolememo_cluster.yaml"))
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(RoleMemoConfig, args.config, args.overrides)
        stats = run_rolememo(
            cfg,
            progress=lambda stage, done, total: print(f"{stage}: {done}/{total or '?'}", file=sys.stderr),
            log=lambda msg: print(msg, file=sys.stderr),
        )
    except (ConfigError, DatasetError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"out": str(cfg.out), "histories": stats["histories"], "totals": stats["totals"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
