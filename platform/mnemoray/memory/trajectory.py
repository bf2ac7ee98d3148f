"""The trajectory log: one JSON line per memory-model call, the SFT/RL data of training.

Format of `trajectories.jsonl` (one object per line, keys exactly these):

    id            deterministic id of the call: hash of (framework, history_id, seq, call)
    framework     "dualmem", "membuilder", "summary", ...
    history_id    the history being built
    session_id    the session the call read (None for calls not tied to one session)
    call          which call, "<framework>/<prompt>", e.g. "dualmem/extract",
                  "membuilder/episodic", "membuilder/compress", "summary/update"
    messages      [{"role": "system"|"user", "content": str}, ...]: the prompt as first sent
                  (re-asks after invalid output are not included; the target is `parsed`)
    raw_output    the model's text of the last attempt ("" if the engine failed)
    parsed        the validated JSON answer, or null when the call failed
    error         null on success, else "<kind>: <reason>" (kind: parse, schema, engine, ...)
    memory_state  the part of the memory the call saw (what the prompt showed), as JSON

A sample for supervised fine-tuning is `messages` + an assistant turn holding
`json.dumps(parsed)` for lines whose `error` is null. Lines are written in call order per
history, histories in input order, so reruns produce identical files.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnemoray.ids import stable_id

TRAJECTORY_KEYS = ("id", "framework", "history_id", "session_id", "call", "messages", "raw_output", "parsed",
                   "error", "memory_state")


@dataclass
class TrajectoryLog:
    """Collects the calls of one history's build, plus call/failure/token counters."""

    framework: str
    history_id: str = ""
    entries: list[dict[str, Any]] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)

    def record(self, call: str, session_id: str | None, messages: list[dict[str, str]], raw_output: str,
               parsed: Any, error: str | None, memory_state: Any, prompt_tokens: int = 0,
               completion_tokens: int = 0) -> dict[str, Any]:
        seq = len(self.entries)
        entry = {
            "id": f"call-{stable_id(self.framework, self.history_id, seq, call)}",
            "framework": self.framework,
            "history_id": self.history_id,
            "session_id": session_id,
            "call": call,
            "messages": messages,
            "raw_output": raw_output,
            "parsed": parsed,
            "error": error,
            "memory_state": memory_state,
        }
        self.entries.append(entry)
        self.counts["calls"] += 1
        self.counts[f"calls.{call}"] += 1
        self.counts["prompt_tokens"] += prompt_tokens
        self.counts["completion_tokens"] += completion_tokens
        if error is not None:
            self.counts["failures"] += 1
            self.counts[f"failures.{call}"] += 1
        return entry

    def note(self, key: str, n: int = 1) -> None:
        """Count a non-call event, e.g. an op rejected by the op parser."""
        self.counts[key] += n

    def stats(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))


def write_jsonl(entries: Iterable[dict[str, Any]], path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for entry in entries:
            fh.write(json.dumps(entry, ensure_ascii=False, sort_keys=False) + "\n")
            n += 1
    return n


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with Path(path).open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
