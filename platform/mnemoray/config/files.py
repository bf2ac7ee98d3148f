"""Which config model a YAML file under `configs/` is, and a check of whole files
(`mnemoray config check`): every invalid key of every file, and engine configs that a
file names (`llm:`, `answerer:`, `judge:`, `responder:`) checked too."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from mnemoray.config.base import ConfigError, load_config
from mnemoray.config.eval import (
    QAEvalConfig,
    RealMemJudgeConfig,
    RetrievalEvalConfig,
    RetrievalSuiteConfig,
    RoleMemoRecallConfig,
    RolePlayEvalConfig,
)
from mnemoray.config.grpo import GRPOConfig
from mnemoray.config.llm import EngineConfig
from mnemoray.config.memory import MemoryBuildConfig
from mnemoray.config.pipeline import PipelineConfig
from mnemoray.config.service import MemoryServiceConfig
from mnemoray.config.synth import RealMemSynthConfig, RoleMemoConfig
from mnemoray.config.train import SFTConfig

# kind name -> model, for files anywhere (`--kind`)
KINDS: dict[str, type[BaseModel]] = {
    "engine": EngineConfig,
    "eval-retrieval": RetrievalEvalConfig,
    "eval-suite": RetrievalSuiteConfig,
    "eval-qa": QAEvalConfig,
    "eval-rolememo": RoleMemoRecallConfig,
    "eval-roleplay": RolePlayEvalConfig,
    "eval-realmem-judge": RealMemJudgeConfig,
    "memory-build": MemoryBuildConfig,
    "synth-rolememo": RoleMemoConfig,
    "synth-realmem": RealMemSynthConfig,
    "serve-memory": MemoryServiceConfig,
    "train-sft": SFTConfig,
    "train-grpo": GRPOConfig,
    "pipeline": PipelineConfig,
}
# where the repository keeps each kind (path under configs/ -> kind); first match wins
LAYOUT: list[tuple[str, str]] = [
    ("eval/retrieval_*.yaml", "eval-suite"),
    ("eval/qa_*.yaml", "eval-qa"),
    ("eval/rolememo_*.yaml", "eval-rolememo"),
    ("eval/roleplay_*.yaml", "eval-roleplay"),
    ("eval/realmem_judge_*.yaml", "eval-realmem-judge"),
    ("eval/judge_*.yaml", "engine"),
    ("llm/*.yaml", "engine"),
    ("memory/*.yaml", "memory-build"),
    ("synth/rolememo_*.yaml", "synth-rolememo"),
    ("synth/realmem_*.yaml", "synth-realmem"),
    ("serve/memory_*.yaml", "serve-memory"),
    ("train/sft_*.yaml", "train-sft"),
    ("train/grpo_*.yaml", "train-grpo"),
    ("pipeline/*.yaml", "pipeline"),
]
# files under configs/ that are another tool's configs (checked by that tool's lane, not here)
FOREIGN = [("verl/*.yaml", "verl Hydra overrides for verl.trainer.main_ppo (docs/verl.md, scripts/test_verl_lane.sh)")]
ENGINE_FIELDS = ("llm", "answerer", "judge", "responder")


def inner_path(path: str | Path) -> str | None:
    """The path below the last `configs/` folder, or None when the file is not under one."""
    parts = Path(path).parts
    if "configs" not in parts:
        return None
    return "/".join(parts[len(parts) - parts[::-1].index("configs"):])


def kind_of(path: str | Path) -> str | None:
    """The kind of a file by where it sits under a `configs/` folder, or None."""
    inner = inner_path(path)
    if inner is None:
        return None
    return next((kind for pattern, kind in LAYOUT if fnmatch.fnmatch(inner, pattern)), None)


def is_foreign(path: str | Path) -> bool:
    inner = inner_path(path)
    return inner is not None and any(fnmatch.fnmatch(inner, pattern) for pattern, _ in FOREIGN)


@dataclass
class FileCheck:
    path: Path
    kind: str | None
    errors: list[str]

    @property
    def ok(self) -> bool:
        return not self.errors


def check_file(path: str | Path, kind: str | None = None, root: Path | None = None) -> FileCheck:
    """Validate one file as `kind` (default: by its place under configs/); `root` resolves the
    engine-config paths it names (default: the working directory, as the jobs do)."""
    path = Path(path)
    if kind is None and is_foreign(path):
        return FileCheck(path, "foreign", [])  # another tool's file: nothing for mnemoray to validate
    kind = kind or kind_of(path)
    if kind is None:
        return FileCheck(path, None, [f"unknown config kind; pass one of {sorted(KINDS)}"])
    if kind not in KINDS:
        return FileCheck(path, kind, [f"unknown kind {kind!r}; choose one of {sorted(KINDS)}"])
    try:
        cfg = load_config(KINDS[kind], path)
    except ConfigError as err:
        return FileCheck(path, kind, [str(err)])
    errors = []
    for field in ENGINE_FIELDS:
        named = getattr(cfg, field, None)
        if isinstance(named, Path):
            target = named if named.is_absolute() else (root or Path.cwd()) / named
            try:
                load_config(EngineConfig, target)
            except ConfigError as err:
                errors.append(f"{path}: key '{field}': {err}")
    return FileCheck(path, kind, errors)
