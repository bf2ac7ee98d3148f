"""LongMemEval (`longmemeval_s` / `_m` / `_oracle`): one haystack history per question.

Protocol: the question is asked after its haystack (sessions dated after the question
are hidden); gold = `answer_session_ids`. Abstention questions (`_abs`: the haystack does
not hold the answer) are kept with `metadata["abstention"] = True`, so QA evaluation can
judge them with the abstention rule; evidence-retrieval evaluation leaves them out, as
LongMemEval's own retrieval metrics do.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from mnemoray.loaders.errors import DatasetError, from_validation_error
from mnemoray.loaders.jsonstream import iter_array, top_level_kind
from mnemoray.records import EvalSample, EvidenceQuery, History, Session, Turn, make_turn_id


class _RawTurn(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str
    has_answer: bool | None = None


class _RawQuestion(BaseModel):
    model_config = ConfigDict(extra="allow")
    question_id: str
    question_type: str
    question: str
    answer: Any = None
    question_date: str | None = None
    haystack_session_ids: list[str]
    haystack_dates: list[str] | None = None
    haystack_sessions: list[list[_RawTurn]]
    answer_session_ids: list[str]

    @model_validator(mode="after")
    def _aligned(self) -> _RawQuestion:
        if len(self.haystack_session_ids) != len(self.haystack_sessions):
            raise ValueError("haystack_session_ids and haystack_sessions differ in length")
        if self.haystack_dates is not None and len(self.haystack_dates) != len(self.haystack_sessions):
            raise ValueError("haystack_dates and haystack_sessions differ in length")
        return self


_DATE_FORMATS = ("%Y/%m/%d (%a) %H:%M", "%Y/%m/%d %H:%M", "%Y/%m/%d")


def _parse_date(text: str | None) -> datetime | None:
    if not text:
        return None
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(text.strip(), fmt)
        except ValueError:
            continue
    return None


def parse_question(path: Path, index: int, raw: Any) -> EvalSample:
    record = raw.get("question_id", index) if isinstance(raw, dict) else index
    if not isinstance(raw, dict):
        raise DatasetError(path, record, None, "expected a JSON object per question")
    try:
        q = _RawQuestion.model_validate(raw)
    except ValidationError as err:
        raise from_validation_error(path, record, err) from None
    dates = q.haystack_dates or [None] * len(q.haystack_sessions)
    order = sorted(range(len(q.haystack_sessions)), key=lambda i: (_parse_date(dates[i]) or datetime.min, i))
    sessions = []
    for i in order:
        sid = q.haystack_session_ids[i]
        turns = [
            Turn(id=make_turn_id(sid, ti), speaker=t.role, text=t.content, index=ti,
                 metadata={"has_answer": bool(t.has_answer)})
            for ti, t in enumerate(q.haystack_sessions[i])
        ]
        sessions.append(Session(id=sid, timestamp=dates[i], turns=turns))
    asked = _parse_date(q.question_date)
    visible = len(sessions)
    if asked is not None:
        visible = sum(1 for s in sessions if (_parse_date(s.timestamp) or datetime.min) <= asked)
    history = History(id=q.question_id, dataset="longmemeval", sessions=sessions)
    query = EvidenceQuery(
        id=q.question_id,
        history_id=q.question_id,
        text=q.question,
        gold_ids=list(dict.fromkeys(q.answer_session_ids)),
        gold_level="session",
        category=q.question_type,
        answer=None if q.answer is None else str(q.answer),
        visible_sessions=visible,
        metadata={"question_date": q.question_date, "abstention": q.question_id.endswith("_abs")},
    )
    return EvalSample(history=history, queries=[query])


def iter_longmemeval(path: Path) -> Iterator[EvalSample | DatasetError]:
    if top_level_kind(path) != "array":
        yield DatasetError(path, None, None, "expected a JSON array of LongMemEval questions")
        return
    try:
        for i, raw in enumerate(iter_array(path)):
            try:
                sample = parse_question(path, i, raw)
            except DatasetError as err:
                yield err
                continue
            yield sample
    except DatasetError as err:
        yield err
