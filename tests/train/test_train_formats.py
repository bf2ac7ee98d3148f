"""SFT input formats: every supported layout converts; every bad record is counted, never raised."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mnemoray.loaders.errors import DatasetError
from mnemoray.train.formats import (
    BadSample,
    Rejects,
    export_llamafactory,
    from_sharegpt,
    read_samples,
    to_messages,
)


def _jsonl(path: Path, lines: list) -> Path:
    path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))
    return path


TRAJ = {"id": "c1", "framework": "dualmem", "history_id": "h", "session_id": "s", "call": 0,
        "messages": [{"role": "system", "content": "Extract facts."}, {"role": "user", "content": "I own a dog."}],
        "raw_output": '{"facts": ["owns a dog"]}', "parsed": {"facts": ["owns a dog"]}, "error": None,
        "memory_state": {}}


def test_trajectory_becomes_prompt_plus_raw_output(tmp_path: Path):
    failed = {**TRAJ, "id": "c2", "error": "schema: missing facts", "parsed": None}
    rejects = Rejects()
    samples = read_samples(_jsonl(tmp_path / "t.jsonl", [TRAJ, failed]), "auto", rejects)
    assert len(samples) == 1
    assert samples[0]["messages"][-1] == {"role": "assistant", "content": TRAJ["raw_output"]}
    assert samples[0]["messages"][:2] == TRAJ["messages"]
    assert rejects.counts == {"trajectory call failed": 1}
    assert rejects.examples["trajectory call failed"] == [f"{tmp_path / 't.jsonl'}:2"]


def test_alpaca_with_system_input_and_history():
    rec = {"instruction": "Summarize", "input": "a long text", "output": "short", "system": "Be brief.",
           "history": [["hi", "hello"]]}
    assert to_messages(rec) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "Summarize\na long text"}, {"role": "assistant", "content": "short"},
    ]


def test_sharegpt_roles_and_trailing_user_turn_dropped():
    rec = {"system": "S", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"},
                                            {"from": "human", "value": "unanswered"}]}
    assert to_messages(rec) == [{"role": "system", "content": "S"}, {"role": "user", "content": "q"},
                                {"role": "assistant", "content": "a"}]


@pytest.mark.parametrize("record, reason", [
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]}, "empty assistant turn"),
    ({"messages": [{"role": "user", "content": "q"}]}, "no assistant turn"),
    ({"messages": []}, "no messages"),
    ({"messages": [{"role": "tool", "content": "x"}, {"role": "assistant", "content": "a"}]}, "unknown role 'tool'"),
    ({"messages": [{"role": "user"}]}, "message without role/content"),
    ({"messages": "hello"}, "'messages' is not a list"),
    ({"conversations": [{"from": "observation", "value": "x"}]}, "unsupported sharegpt role 'observation'"),
    ({"instruction": "i", "output": 3}, "output is not a string"),
    ({"instruction": "i", "output": "o", "history": [["only one"]]}, "history entry is not a [user, assistant] pair"),
    ({"something": 1}, "unknown record format"),
    ([1, 2], "record is not a JSON object"),
])
def test_bad_records_give_reasons(record, reason):
    with pytest.raises(BadSample, match=None) as err:
        to_messages(record)
    assert str(err.value) == reason


def test_read_counts_bad_lines_and_keeps_good_ones(tmp_path: Path):
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    path = _jsonl(tmp_path / "mixed.jsonl", [good, "{not json", good, {"messages": [{"role": "user", "content": "q"},
                                                                          {"role": "assistant", "content": ""}]}, ""])
    rejects = Rejects()
    samples = read_samples(path, "auto", rejects)
    assert len(samples) == 2
    assert rejects.counts == {"invalid JSON": 1, "empty assistant turn": 1}
    assert rejects.as_dict()["total"] == 2


def test_forced_format_mismatch_is_a_counted_reject(tmp_path: Path):
    path = _jsonl(tmp_path / "x.jsonl", [{"messages": [{"role": "user", "content": "q"}]}])
    rejects = Rejects()
    assert read_samples(path, "alpaca", rejects) == []
    assert rejects.counts == {"instruction is not a string": 1}


def test_json_array_file_and_broken_file(tmp_path: Path):
    arr = tmp_path / "alpaca.json"
    arr.write_text(json.dumps([{"instruction": "i", "output": "o"}, {"instruction": "j", "output": "p"}]))
    assert [s["where"] for s in read_samples(arr)] == [f"{arr}[0]", f"{arr}[1]"]
    broken = tmp_path / "broken.json"
    broken.write_text('[{"instruction": ')
    with pytest.raises(DatasetError, match="not valid JSON"):
        read_samples(broken)
    with pytest.raises(FileNotFoundError, match="no such data file"):
        read_samples(tmp_path / "missing.jsonl")


def test_llamafactory_export_reads_back(tmp_path: Path):
    samples = [[{"role": "system", "content": "S"}, {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a"}]]
    data_file = export_llamafactory(samples, tmp_path / "lf")
    info = json.loads((tmp_path / "lf" / "dataset_info.json").read_text())
    assert info["mnemoray_sft"]["formatting"] == "sharegpt"
    back = json.loads(data_file.read_text())
    assert back == [{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}], "system": "S"}]
    assert from_sharegpt(back[0]) == samples[0]
