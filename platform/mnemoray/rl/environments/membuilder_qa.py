"""The "membuilder-qa" environment: MemBuilder agent prompts with what the dense-QA reward needs.

`prepare_membuilder_qa(build, engine, ...)` (run by `mnemoray train grpo-data --environment
membuilder --qa-engine ...`) rebuilds every session's memory state from the trajectory
log (`membuilder_sessions`), generates each session's synthetic questions ONCE into a
cache file (`mnemoray.rewards.qa_synth`; default `<build>/qa_cache.jsonl`, reused and
resumed by later runs) and returns the `membuilder` prompts with, in extra_info:

    session_date, state_before (the whole memory before the session), expert_ops (each
    agent's expert answer), handles (each store agent's handle -> item id map), qa (the
    session's questions) and qa_settings (when given: `DenseQASettings` fields)

so the "membuilder-qa" reward scores a rollout without regenerating anything. Prompts of
a session without questions (its generation failed) are left out and counted.

As an environment (`environment.name: membuilder-qa`, `environment.path: <build>`) it
reads the cache only: a session missing from it is an error that says to run grpo-data.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mnemoray.loaders.errors import DatasetError
from mnemoray.rewards.qa_synth import QACache, QASynthSettings, SessionText, SynthReport, synthesize_qa
from mnemoray.rl.environments.membuilder import load_membuilder, trajectory_file
from mnemoray.rl.environments.membuilder_sessions import SessionRecord, session_records
from mnemoray.rl.environments.prompts import RLPrompt

CACHE_NAME = "qa_cache.jsonl"


def default_cache(build: str | Path) -> Path:
    return trajectory_file(Path(build).expanduser()).parent / CACHE_NAME


def read_calls(file: Path) -> list[dict[str, Any]]:
    """The log's lines as dicts (malformed lines skipped: `load_membuilder` reports them)."""
    calls = []
    with open(file, encoding="utf-8") as f:
        for line in f:
            try:
                value = json.loads(line) if line.strip() else None
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict) and isinstance(value.get("call"), str) and "history_id" in value:
                calls.append(value)
    return calls


def session_texts(records: list[SessionRecord]) -> list[SessionText]:
    """Each session with the transcripts of its history's earlier sessions."""
    out, earlier = [], {}
    for r in records:
        before = earlier.setdefault(r.history_id, [])
        out.append(SessionText(r.history_id, r.session_id, r.date, r.text, tuple(before)))
        before.append((r.date, r.text))
    return out


def with_session_qa(prompts: list[RLPrompt], records: list[SessionRecord], cache: QACache,
                    qa_settings: Mapping[str, Any] | None, counts: Counter) -> list[RLPrompt]:
    by_key = {r.key: r for r in records}
    out = []
    for p in prompts:
        key = p.extra_info["group"]
        record, questions = by_key.get(key), cache.questions(key)
        if record is None or not questions:
            counts["dropped_no_qa"] += 1
            continue
        info = {**p.extra_info, "session_date": record.date, "state_before": record.state_before,
                "expert_ops": record.expert, "handles": record.handles, "qa": questions}
        if qa_settings:
            info["qa_settings"] = dict(qa_settings)
        out.append(RLPrompt(p.id, p.messages, p.data_source, p.ground_truth, info))
    return out


def prepare_membuilder_qa(build: str | Path, engine: Any = None, cache_path: str | Path | None = None,
                          synth: QASynthSettings | None = None, qa_settings: Mapping[str, Any] | None = None,
                          skip_invalid: bool = False, counts: Counter | None = None
                          ) -> tuple[list[RLPrompt], list[DatasetError], SynthReport]:
    """Prompts with session QA (generated with `engine` for sessions not in the cache yet)."""
    counts = counts if counts is not None else Counter()
    file = trajectory_file(Path(build).expanduser())
    prompts, errors = load_membuilder(file, skip_invalid=skip_invalid, counts=counts)
    records = session_records(read_calls(file))
    wanted = {p.extra_info["group"] for p in prompts}
    texts = [t for t in session_texts(records) if t.key in wanted]
    cache = QACache(cache_path or file.parent / CACHE_NAME)
    missing = [t.key for t in texts if t.key not in cache]
    if missing and engine is None:
        raise DatasetError(cache.path, None, None, f"{len(missing)} sessions have no cached questions (first: "
                           f"{missing[0]}); generate them with `mnemoray train grpo-data --environment membuilder "
                           "--qa-engine ENGINE.yaml`")
    report = synthesize_qa(engine, texts, cache, synth) if missing else SynthReport(cached=len(texts))
    return with_session_qa(prompts, records, cache, qa_settings, counts), errors, report


def load_membuilder_qa(path: str | Path, skip_invalid: bool = False) -> tuple[list[RLPrompt], list[DatasetError]]:
    """Environment loader: a build folder whose questions are already cached (no engine)."""
    prompts, errors, _ = prepare_membuilder_qa(path, None, skip_invalid=skip_invalid)
    return prompts, errors


__all__ = ["CACHE_NAME", "default_cache", "load_membuilder_qa", "prepare_membuilder_qa", "session_texts",
           "with_session_qa"]
