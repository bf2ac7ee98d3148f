"""The "prompts" environment: a file of chat prompts, each with what its reward needs.

A record (one JSONL line, or one row of a verl-style parquet file):

    {"id": "q1",                       # optional; default "<file stem>:<line or row>"
     "prompt": [{"role": "user", "content": "..."}] or "a plain user message",
     "data_source": "my-task",         # optional; passed to the reward
     "ground_truth": ...,              # optional; or verl's {"reward_model": {"ground_truth": ...}}
     "extra_info": {...}}              # optional; passed to the reward

A bad record raises `DatasetError` naming the file, the line and the field; with
`skip_invalid` it is reported and the rest are kept. Ids must be unique: they key the
rollouts, the rewards and the resumable step schedule.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from mnemoray.loaders.errors import DatasetError, from_validation_error

SUFFIXES = (".jsonl", ".parquet")


@dataclass(frozen=True)
class RLPrompt:
    id: str
    messages: tuple[dict[str, str], ...]
    data_source: str = "prompts"
    ground_truth: Any = None
    extra_info: dict[str, Any] = field(default_factory=dict)


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant"]
    content: str


class _RewardModel(BaseModel):
    model_config = ConfigDict(extra="ignore")
    ground_truth: Any = None


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str | int | None = None
    prompt: list[_Message]
    data_source: str = "prompts"
    ground_truth: Any = None
    reward_model: _RewardModel | None = None
    extra_info: dict[str, Any] | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _plain_text_is_a_user_message(cls, prompt: Any) -> Any:
        return [{"role": "user", "content": prompt}] if isinstance(prompt, str) and prompt else prompt

    @field_validator("prompt")
    @classmethod
    def _not_empty(cls, prompt: list[_Message]) -> list[_Message]:
        if not prompt:
            raise ValueError("is empty")
        if prompt[-1].role != "user":
            raise ValueError(f"must end with a user message (ends with {prompt[-1].role!r})")
        return prompt


def prompt_files(path: Path) -> list[Path]:
    """The file itself, or a folder's *.jsonl / *.parquet files in name order."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES)
        if not files:
            raise DatasetError(path, None, None, f"folder has no {' or '.join(SUFFIXES)} files")
        return files
    if not path.is_file():
        raise DatasetError(path, None, None, "no such file or folder")
    if path.suffix not in SUFFIXES:
        raise DatasetError(path, None, None, f"expected a {' or '.join(SUFFIXES)} file")
    return [path]


def raw_records(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, record) pairs; a malformed JSON line yields (where, DatasetError)."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for row, record in enumerate(pq.read_table(path).to_pylist()):
            yield f"row {row}", record
        return
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield f"line {lineno}", json.loads(line)
            except json.JSONDecodeError as err:
                yield f"line {lineno}", DatasetError(path, f"line {lineno}", None, f"malformed JSON ({err.msg})")


def parse_record(path: Path, where: str, raw: Any) -> RLPrompt:
    if isinstance(raw, DatasetError):
        raise raw
    if not isinstance(raw, dict):
        raise DatasetError(path, where, None, f"expected a JSON object, got {type(raw).__name__}")
    try:
        record = _Record.model_validate(raw)
    except ValidationError as err:
        raise from_validation_error(path, where, err) from None
    messages = tuple(m.model_dump() for m in record.prompt)
    ground_truth = record.ground_truth
    if ground_truth is None and record.reward_model is not None:
        ground_truth = record.reward_model.ground_truth
    pid = str(record.id) if record.id is not None else f"{path.stem}:{where.split()[-1]}"
    return RLPrompt(pid, messages, record.data_source, ground_truth, dict(record.extra_info or {}))


def load_prompts(path: str | Path, skip_invalid: bool = False) -> tuple[list[RLPrompt], list[DatasetError]]:
    """All prompts of a file or folder, plus the errors of the records skipped (skip_invalid)."""
    prompts: list[RLPrompt] = []
    errors: list[DatasetError] = []
    seen: dict[str, str] = {}
    for file in prompt_files(Path(path).expanduser()):
        for where, raw in raw_records(file):
            try:
                prompt = parse_record(file, where, raw)
                if prompt.id in seen:
                    raise DatasetError(file, where, "id", f"duplicate id {prompt.id!r} (first at {seen[prompt.id]})")
            except DatasetError as err:
                if not skip_invalid:
                    raise
                errors.append(err)
                continue
            seen[prompt.id] = f"{file.name} {where}"
            prompts.append(prompt)
    return prompts, errors


__all__ = ["RLPrompt", "load_prompts", "prompt_files"]
