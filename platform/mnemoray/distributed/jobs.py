"""The `ray job submit` entry shared by the jobs that write one output folder (jobs/build_memory.py,
jobs/evaluate.py): `--kind`, `--config`, `--out PATH_OR_URI`, key=value overrides; the same config
models and runners as the CLI; exit 2 on bad input. Where the outputs go is `mnemoray.outputs`'
business (docs/ARCHITECTURE.md, "Installs, images, cluster manifests")."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class JobKind:
    """One thing a job entry can run: its config model, the cluster preset it defaults to, and
    the runner (`run(cfg) -> summary dict`). `resumable` jobs skip work already in their output
    folder, so a URI output is first copied down and kept up to date even when the run fails."""

    config: type
    default_config: str
    run: Callable[[Any], dict[str, Any]]
    resumable: bool = False


def output_job_main(argv: list[str] | None, *, description: str, kinds: Mapping[str, JobKind],
                    default_kind: str) -> int:
    """Parse, load the config, run the kind into `--out` (or the config's `out`), print a JSON summary."""
    from mnemoray.config import ConfigError, load_config
    from mnemoray.loaders import DatasetError
    from mnemoray.outputs import check_output, output_dir

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    if len(kinds) > 1:
        parser.add_argument("--kind", choices=sorted(kinds), default=default_kind)
    parser.add_argument("--config", type=Path, default=None, help="default: the kind's cluster preset")
    parser.add_argument("--out", default=None,
                        help="output path or URI (s3://, gs://, file://); overrides the config's out")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args(argv)
    kind = kinds[getattr(args, "kind", default_kind)]
    try:
        cfg = load_config(kind.config, args.config or Path(kind.default_config), args.overrides)
        key = "--out" if args.out is not None else "out"
        target = check_output(args.out if args.out is not None else cfg.out, key=key)
        with output_dir(target, key=key, resume=kind.resumable) as local:
            summary = kind.run(cfg.model_copy(update={"out": local}))
    except (ConfigError, DatasetError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"out": target, **_printable(summary)}, indent=2, default=str))
    return 0


def _build_memory(cfg: Any) -> dict[str, Any]:
    from mnemoray.distributed.data.memory_build import run_memory_build

    if not cfg.llm.exists():
        raise FileNotFoundError(f"llm={cfg.llm}: no such LLM engine config")
    return run_memory_build(cfg)


def _suite(cfg: Any) -> dict[str, Any]:
    from rich.console import Console

    from mnemoray.distributed.data.retrieval_suite import run_suite

    dirs = run_suite(cfg, Console(width=160, stderr=True))
    return {"runs": [str(Path(d).relative_to(cfg.out)) for d in dirs], "table": "comparison.md"}


def _qa(cfg: Any) -> dict[str, Any]:
    from mnemoray.distributed.data.qa_eval import run_qa_eval

    return run_qa_eval(cfg)


def _rolememo(cfg: Any) -> dict[str, Any]:
    from mnemoray.distributed.data.judged_evals import run_rolememo_eval

    return run_rolememo_eval(cfg)


def _roleplay(cfg: Any) -> dict[str, Any]:
    from mnemoray.distributed.data.judged_evals import run_roleplay_eval

    return run_roleplay_eval(cfg)


def _realmem_judge(cfg: Any) -> dict[str, Any]:
    from mnemoray.distributed.data.judged_evals import run_realmem_judge

    return run_realmem_judge(cfg)


def build_kinds() -> dict[str, JobKind]:
    """jobs/build_memory.py: the runner of `mnemoray memory build`."""
    from mnemoray.config import MemoryBuildConfig

    return {"memory": JobKind(MemoryBuildConfig, "configs/memory/cluster.yaml", _build_memory, resumable=True)}


def evaluation_kinds() -> dict[str, JobKind]:
    """jobs/evaluate.py: the runners of `mnemoray eval suite|qa|rolememo|roleplay|realmem-judge`."""
    from mnemoray.config import (
        QAEvalConfig,
        RealMemJudgeConfig,
        RetrievalSuiteConfig,
        RoleMemoRecallConfig,
        RolePlayEvalConfig,
    )

    return {
        "suite": JobKind(RetrievalSuiteConfig, "configs/eval/retrieval_cluster.yaml", _suite),
        "qa": JobKind(QAEvalConfig, "configs/eval/qa_cluster.yaml", _qa),
        "rolememo": JobKind(RoleMemoRecallConfig, "configs/eval/rolememo_cluster.yaml", _rolememo),
        "roleplay": JobKind(RolePlayEvalConfig, "configs/eval/roleplay_cluster.yaml", _roleplay),
        "realmem-judge": JobKind(RealMemJudgeConfig, "configs/eval/realmem_judge_cluster.yaml", _realmem_judge),
    }


def _printable(summary: Any) -> dict[str, Any]:
    """The summary's scalar and small fields (per-query rows stay in the output folder)."""
    if not isinstance(summary, dict):
        return {"result": summary}
    return {k: v for k, v in summary.items() if not isinstance(v, list) or len(v) <= 20}


__all__ = ["JobKind", "build_kinds", "evaluation_kinds", "output_job_main"]
