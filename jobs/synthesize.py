"""`ray job submit` entry for dataset synthesis; `--kind` picks the pipeline.

    ray job submit --working-dir . -- python jobs/synthesize.py \
        --config configs/synth/rolememo_cluster.yaml limit=2000 key=value ...
    ray job submit --working-dir . -- python jobs/synthesize.py --kind realmem \
        --config configs/synth/realmem_cluster.yaml personas=/mnt/data/personas.jsonl

Inside a Ray job, `ray.init()` joins the cluster that runs the job. Resubmitting with the
same `out` resumes: finished parts are skipped and nothing is duplicated.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mnemoray.config import ConfigError, load_config
from mnemoray.config.synth import RealMemSynthConfig, RoleMemoConfig
from mnemoray.loaders import DatasetError
from mnemoray.outputs import check_local_output


def _rolememo(cfg: Any, **kw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    from mnemoray.distributed.data.synth_rolememo import run_rolememo

    stats = run_rolememo(cfg, **kw)
    return stats, {"histories": stats["histories"], "totals": stats["totals"]}


def _realmem(cfg: Any, **kw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    from mnemoray.distributed.data.synth_realmem import run_realmem

    stats = run_realmem(cfg, **kw)
    return stats, {"histories": stats["histories"], "sessions": stats["sessions"], "totals": stats["totals"]}


# kind -> (config model, default config, runner)
KINDS: dict[str, tuple[type, Path, Callable[..., tuple[dict[str, Any], dict[str, Any]]]]] = {
    "rolememo": (RoleMemoConfig, Path("configs/synth/rolememo_cluster.yaml"), _rolememo),
    "realmem": (RealMemSynthConfig, Path("configs/synth/realmem_cluster.yaml"), _realmem),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kind", choices=sorted(KINDS), default="rolememo")
    parser.add_argument("--config", type=Path, default=None, help="default: the kind's cluster config")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args(argv)
    model, default, run = KINDS[args.kind]
    try:
        cfg = load_config(model, args.config or default, args.overrides)
        check_local_output(cfg.out, why=": synthesis writes and resumes its parts in `out`")
        _, summary = run(
            cfg,
            progress=lambda stage, done, total: print(f"{stage}: {done}/{total or '?'}", file=sys.stderr),
            log=lambda msg: print(msg, file=sys.stderr),
        )
    except (ConfigError, DatasetError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"out": str(cfg.out), **summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
