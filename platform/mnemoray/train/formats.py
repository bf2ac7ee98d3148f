"""Read SFT sources (trajectory logs, LLaMA-Factory alpaca/sharegpt, plain messages) as chat samples.

Every record either becomes a list of `{"role", "content"}` messages ending in an
assistant turn, or a reason it was rejected. A bad record is counted with where it came
from; it never stops the run, so a long job does not die halfway on one broken line.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnemoray.loaders.errors import DatasetError

ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system"}
FORMATS = ("trajectory", "alpaca", "sharegpt", "messages")
MAX_EXAMPLES = 5  # per reason, so a report shows where to look without flooding


class BadSample(ValueError):
    """A record that cannot become a training sample; the message is the counted reason."""


@dataclass
class Rejects:
    """Rejected samples by reason, with the first few locations of each."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, where: str) -> None:
        self.counts[reason] += 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < MAX_EXAMPLES:
            ex.append(where)

    def merge(self, other: Rejects) -> None:
        for reason, n in other.counts.items():
            self.counts[reason] += n
            ex = self.examples.setdefault(reason, [])
            ex.extend(other.examples.get(reason, [])[: MAX_EXAMPLES - len(ex)])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        return {"total": self.total, "by_reason": dict(self.counts), "examples": self.examples}


def iter_records(path: Path) -> Iterator[tuple[str, Any]]:
    """(location, record) pairs from a JSON array or JSONL file; unparsable lines yield BadSample.

    A file that is not JSON at all raises DatasetError: that is a wrong path, not a bad sample.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise DatasetError(path, None, None, f"not valid JSON ({err.msg} at line {err.lineno})") from None
        if not isinstance(data, list):
            raise DatasetError(path, None, None, "expected a JSON array of records")
        for i, rec in enumerate(data):
            yield f"{path}[{i}]", rec
        return
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield f"{path}:{lineno}", json.loads(line)
        except json.JSONDecodeError:
            yield f"{path}:{lineno}", BadSample("invalid JSON")


def detect_format(record: Any) -> str:
    if not isinstance(record, dict):
        raise BadSample("record is not a JSON object")
    if "raw_output" in record and "messages" in record:
        return "trajectory"
    if "conversations" in record:
        return "sharegpt"
    if "instruction" in record and "output" in record:
        return "alpaca"
    if "messages" in record:
        return "messages"
    raise BadSample("unknown record format")


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise BadSample(f"{what} is not a string")
    return value


def _check_messages(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """Roles known, contents strings, no empty assistant turn; trailing non-assistant turns dropped."""
    if not messages:
        raise BadSample("no messages")
    for m in messages:
        if m["role"] not in ROLES:
            raise BadSample(f"unknown role '{m['role']}'")
        if m["role"] == "assistant" and not m["content"].strip():
            raise BadSample("empty assistant turn")
    while messages and messages[-1]["role"] != "assistant":
        messages = messages[:-1]
    if not messages:
        raise BadSample("no assistant turn")
    return messages


def _from_messages(raw: Any) -> list[dict[str, str]]:
    if not isinstance(raw, list):
        raise BadSample("'messages' is not a list")
    out = []
    for m in raw:
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise BadSample("message without role/content")
        out.append({"role": _text(m["role"], "role"), "content": _text(m["content"], "content")})
    return out


def from_trajectory(rec: dict[str, Any]) -> list[dict[str, str]]:
    """One memory-model call of `mnemoray memory build`: its prompt + the raw answer, if it succeeded."""
    if rec.get("error") is not None:
        raise BadSample("trajectory call failed")
    raw = _text(rec.get("raw_output"), "raw_output")
    return _from_messages(rec.get("messages")) + [{"role": "assistant", "content": raw}]


def from_alpaca(rec: dict[str, Any]) -> list[dict[str, str]]:
    """LLaMA-Factory alpaca: instruction (+ input), output, optional system and history pairs."""
    messages: list[dict[str, str]] = []
    if rec.get("system"):
        messages.append({"role": "system", "content": _text(rec["system"], "system")})
    for pair in rec.get("history") or []:
        if not isinstance(pair, list) or len(pair) != 2:
            raise BadSample("history entry is not a [user, assistant] pair")
        messages.append({"role": "user", "content": _text(pair[0], "history")})
        messages.append({"role": "assistant", "content": _text(pair[1], "history")})
    prompt = _text(rec.get("instruction"), "instruction")
    if rec.get("input"):
        prompt = f"{prompt}\n{_text(rec['input'], 'input')}"
    messages.append({"role": "user", "content": prompt})
    messages.append({"role": "assistant", "content": _text(rec.get("output"), "output")})
    return messages


def from_sharegpt(rec: dict[str, Any]) -> list[dict[str, str]]:
    """LLaMA-Factory sharegpt: conversations of {from, value}, optional system."""
    conv = rec.get("conversations")
    if not isinstance(conv, list):
        raise BadSample("'conversations' is not a list")
    messages: list[dict[str, str]] = []
    if rec.get("system"):
        messages.append({"role": "system", "content": _text(rec["system"], "system")})
    for turn in conv:
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise BadSample("turn without from/value")
        role = SHAREGPT_ROLES.get(turn["from"]) if isinstance(turn["from"], str) else None
        if role is None:
            raise BadSample(f"unsupported sharegpt role '{turn['from']}'")
        messages.append({"role": role, "content": _text(turn["value"], "value")})
    return messages


_CONVERTERS = {
    "trajectory": from_trajectory,
    "alpaca": from_alpaca,
    "sharegpt": from_sharegpt,
    "messages": lambda rec: _from_messages(rec.get("messages")),
}


def to_messages(record: Any, fmt: str = "auto") -> list[dict[str, str]]:
    """Convert one record; raises BadSample with the reason."""
    if isinstance(record, BadSample):
        raise record
    if not isinstance(record, dict):
        raise BadSample("record is not a JSON object")
    kind = detect_format(record) if fmt == "auto" else fmt
    if kind not in _CONVERTERS:
        raise BadSample(f"unknown format '{fmt}'")
    try:
        return _check_messages(_CONVERTERS[kind](record))
    except (KeyError, TypeError, AttributeError) as err:
        raise BadSample(f"malformed {kind} record ({type(err).__name__})") from None


def read_samples(path: Path, fmt: str = "auto", rejects: Rejects | None = None) -> list[dict[str, Any]]:
    """All good samples of one file as `{"where", "messages"}`; bad ones go to `rejects`."""
    rejects = rejects if rejects is not None else Rejects()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such data file")
    out = []
    for where, rec in iter_records(path):
        try:
            out.append({"where": where, "messages": to_messages(rec, fmt)})
        except BadSample as err:
            rejects.add(str(err), where)
    return out


def to_sharegpt(messages: list[dict[str, str]]) -> dict[str, Any]:
    """A chat sample in LLaMA-Factory's sharegpt layout (for training there)."""
    back = {"user": "human", "assistant": "gpt"}
    rec: dict[str, Any] = {"conversations": [
        {"from": back[m["role"]], "value": m["content"]} for m in messages if m["role"] != "system"
    ]}
    system = [m["content"] for m in messages if m["role"] == "system"]
    if system:
        rec["system"] = "\n".join(system)
    return rec


def export_llamafactory(samples: list[list[dict[str, str]]], out_dir: Path, name: str = "mnemoray_sft") -> Path:
    """Write samples + the dataset_info.json entry LLaMA-Factory needs to find them."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data_file = out_dir / f"{name}.json"
    data_file.write_text(json.dumps([to_sharegpt(s) for s in samples], ensure_ascii=False, indent=1), encoding="utf-8")
    info = {name: {"file_name": data_file.name, "formatting": "sharegpt",
                   "columns": {"messages": "conversations", "system": "system"}}}
    (out_dir / "dataset_info.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    return data_file
