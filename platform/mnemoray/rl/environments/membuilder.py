"""The "membuilder" environment: one RL prompt per memory agent per session, from the
trajectory logs `mnemoray memory build` writes for the membuilder framework.

Each successful agent call (`membuilder/core`, `/episodic`, `/semantic`, `/procedural`)
becomes a prompt with exactly the messages the agent was given (the session transcript
and the memory it saw before that session). What the rewards need goes in extra_info:

    memory_type    the agent's store ("core", "episodic", ...): length rule, ADRPO type
    expert_length  chars of the expert's answer (json of `parsed`), for the length penalty
    history_id, session_id, group ("<history>/<session>": the four agents of a session,
                   scored together by the dense-QA reward), memory_state (what the call saw)

The expert's answer is the ground truth. Calls that failed (no expert answer) and other
calls (compression, other frameworks) are skipped and counted, not errors; a malformed
line is a `DatasetError` naming the file, the line and the field.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from mnemoray.loaders.errors import DatasetError, from_validation_error
from mnemoray.rl.environments.prompts import RLPrompt

AGENTS = ("core", "episodic", "semantic", "procedural")
FRAMEWORK = "membuilder"


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str
    content: str


class _Call(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str
    framework: str
    history_id: str
    session_id: str | None
    call: str
    messages: list[_Message]
    parsed: Any = None
    error: str | None = None
    memory_state: Any = None


def trajectory_file(path: Path) -> Path:
    """The trajectories.jsonl of a `memory build` output folder, or the file itself."""
    candidate = path / "trajectories.jsonl" if path.is_dir() else path
    if not candidate.is_file():
        raise DatasetError(path, None, None, "no trajectories.jsonl (run `mnemoray memory build` with membuilder)")
    return candidate


def prompt_of(call: _Call) -> RLPrompt | None:
    """The RL prompt of one logged call, or None for a call that is not a membuilder agent's."""
    framework_call, _, agent = call.call.partition("/")
    if call.framework != FRAMEWORK or framework_call != FRAMEWORK or agent not in AGENTS:
        return None
    if call.error is not None or call.parsed is None or call.session_id is None:
        return None
    expert = json.dumps(call.parsed, ensure_ascii=False, sort_keys=True)
    info = {"memory_type": agent, "expert_length": len(expert), "history_id": call.history_id,
            "session_id": call.session_id, "group": f"{call.history_id}/{call.session_id}",
            "memory_state": call.memory_state}
    return RLPrompt(call.id, tuple(m.model_dump() for m in call.messages), FRAMEWORK, expert, info)


def load_membuilder(path: str | Path, skip_invalid: bool = False,
                    counts: Counter | None = None) -> tuple[list[RLPrompt], list[DatasetError]]:
    """The agent prompts of a trajectory log, in log order; `counts` collects kept/skipped counts."""
    file = trajectory_file(Path(path).expanduser())
    counts = counts if counts is not None else Counter()
    prompts: list[RLPrompt] = []
    errors: list[DatasetError] = []
    with open(file, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"line {lineno}"
            try:
                try:
                    raw = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DatasetError(file, where, None, f"malformed JSON ({err.msg})") from None
                try:
                    call = _Call.model_validate(raw)
                except ValidationError as err:
                    raise from_validation_error(file, where, err) from None
            except DatasetError as err:
                if not skip_invalid:
                    raise
                errors.append(err)
                continue
            prompt = prompt_of(call)
            if prompt is None:
                failed = call.call.startswith(f"{FRAMEWORK}/") and call.error is not None
                counts["skipped_failed" if failed else "skipped_other"] += 1
                continue
            counts[f"kept.{prompt.extra_info['memory_type']}"] += 1
            prompts.append(prompt)
    return prompts, errors


__all__ = ["AGENTS", "load_membuilder", "prompt_of", "trajectory_file"]
