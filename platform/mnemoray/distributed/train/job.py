"""The `ray job submit` entry shared by the training jobs (jobs/train_*.py): parse
`--config` and key=value overrides, run, print a JSON summary; exit 2 on bad input, 1 when
training failed, 0 otherwise."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def train_job_main(argv: list[str] | None, *, description: str, config_cls: type, default_config: str,
                   run: Callable[..., Any], extra_args: Callable[[argparse.ArgumentParser], None] | None = None,
                   extra_overrides: Callable[[argparse.Namespace], list[str]] | None = None) -> int:
    from mnemoray.config import ConfigError, load_config
    from mnemoray.loaders import DatasetError
    from mnemoray.outputs import check_local_output

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path(default_config))
    if extra_args is not None:
        extra_args(parser)
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args(argv)
    overrides = list(args.overrides) + (extra_overrides(args) if extra_overrides is not None else [])
    try:
        cfg = load_config(config_cls, args.config, overrides)
        # inside `ray job submit`, a relative path would land in Ray's temporary working-dir copy
        check_local_output(cfg.out, why=": training writes metrics, plots and the HF export there")
        if cfg.storage_path is not None:
            check_local_output(cfg.storage_path, key="storage_path", why=" (checkpoints; resubmitting resumes from it)")
        result = run(cfg, log=lambda msg: print(msg, file=sys.stderr))
    except (ConfigError, DatasetError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"run_dir": str(result.run_dir), "export": str(result.export_dir),
                      "final": result.metrics, "error": result.error}, indent=2))
    return 1 if result.error else 0


__all__ = ["train_job_main"]
