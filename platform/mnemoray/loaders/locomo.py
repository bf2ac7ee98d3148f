"""LoCoMo (snap-research/LoCoMo `locomo10.json`): conversations with QA and turn evidence.

Protocol: every question sees the whole conversation; gold = evidence `dia_id`s (turn level).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from mnemoray.loaders.errors import DatasetError, from_validation_error
from mnemoray.loaders.jsonstream import iter_array, top_level_kind
from mnemoray.records import EvalSample, EvidenceQuery, History, Persona, Session, Turn

CATEGORY_NAMES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}


class _RawTurn(BaseModel):
    model_config = ConfigDict(extra="allow")
    speaker: str
    dia_id: str
    text: str
    blip_caption: str | None = None


class _RawQA(BaseModel):
    model_config = ConfigDict(extra="allow")
    question: str
    answer: Any = None
    adversarial_answer: Any = None
    evidence: list[str] = []
    category: int


class _RawSample(BaseModel):
    model_config = ConfigDict(extra="allow")
    sample_id: str
    conversation: dict[str, Any]
    qa: list[_RawQA]


_SESSION_KEY = re.compile(r"^session_(\d+)$")


def _split_evidence(raw: list[str]) -> list[str]:
    out: list[str] = []
    for entry in raw:
        for part in re.split(r"[;,]", str(entry)):
            part = part.strip()
            if part and part not in out:
                out.append(part)
    return out


def _sessions(path: Path, sample_id: str, conv: dict[str, Any]) -> list[Session]:
    numbers = sorted(int(m.group(1)) for k in conv if (m := _SESSION_KEY.match(k)))
    if not numbers:
        raise DatasetError(path, sample_id, "conversation", "no session_N lists found")
    sessions = []
    for n in numbers:
        raw_turns = conv[f"session_{n}"]
        if not isinstance(raw_turns, list):
            raise DatasetError(path, sample_id, f"conversation.session_{n}", "must be a list of turns")
        turns = []
        for i, raw in enumerate(raw_turns):
            try:
                t = _RawTurn.model_validate(raw)
            except ValidationError as err:
                raise from_validation_error(path, sample_id, err, prefix=f"conversation.session_{n}.{i}") from None
            text = t.text
            if t.blip_caption:
                text = f"{text} [shares a photo: {t.blip_caption}]".strip()
            turns.append(Turn(id=t.dia_id, speaker=t.speaker, text=text, index=i))
        date = conv.get(f"session_{n}_date_time")
        sessions.append(Session(id=f"{sample_id}:S{n}", timestamp=str(date) if date else None, turns=turns))
    return sessions


def parse_sample(path: Path, index: int, raw: Any) -> EvalSample:
    record = raw.get("sample_id", index) if isinstance(raw, dict) else index
    if not isinstance(raw, dict):
        raise DatasetError(path, record, None, "expected a JSON object per conversation")
    try:
        s = _RawSample.model_validate(raw)
    except ValidationError as err:
        raise from_validation_error(path, record, err) from None
    conv = s.conversation
    sessions = _sessions(path, s.sample_id, conv)
    speakers = [conv.get("speaker_a", ""), conv.get("speaker_b", "")]
    history = History(
        id=s.sample_id,
        dataset="locomo",
        persona=Persona(id=s.sample_id, name=" & ".join(x for x in speakers if x)),
        sessions=sessions,
    )
    queries = []
    for qi, qa in enumerate(s.qa):
        gold = _split_evidence(qa.evidence)
        if not gold:
            continue  # nothing to score retrieval against
        answer = qa.answer if qa.answer is not None else qa.adversarial_answer
        queries.append(
            EvidenceQuery(
                id=f"{s.sample_id}:q{qi}",
                history_id=s.sample_id,
                text=qa.question,
                gold_ids=gold,
                gold_level="turn",
                category=CATEGORY_NAMES.get(qa.category, str(qa.category)),
                answer=None if answer is None else str(answer),
            )
        )
    return EvalSample(history=history, queries=queries)


def iter_locomo(path: Path) -> Iterator[EvalSample | DatasetError]:
    if top_level_kind(path) != "array":
        yield DatasetError(path, None, None, "expected a JSON array of LoCoMo conversations")
        return
    try:
        for i, raw in enumerate(iter_array(path)):
            try:
                yield parse_sample(path, i, raw)
            except DatasetError as err:
                yield err
    except DatasetError as err:
        yield err
