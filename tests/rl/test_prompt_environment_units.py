"""The "prompts" environment: JSONL and verl-style parquet records, defaults, and malformed
files that name the file, line and field (or are skipped and listed with skip_invalid)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mnemoray.loaders.errors import DatasetError
from mnemoray.rl.environments import ENVIRONMENTS, load_prompts
from repo_paths import REPO


def write_jsonl(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_records_with_defaults_and_verl_ground_truth(tmp_path: Path):
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"id": 7, "prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
         "data_source": "qa", "ground_truth": "x", "extra_info": {"k": 1}},
        {"prompt": "plain text", "reward_model": {"style": "rule", "ground_truth": ["a", "b"]}},
        "",
    ])
    prompts, errors = load_prompts(path)
    assert errors == []
    first, second = prompts
    assert first.id == "7" and first.messages[-1] == {"role": "user", "content": "q"}
    assert (first.data_source, first.ground_truth, first.extra_info) == ("qa", "x", {"k": 1})
    assert second.id == "p:2" and second.messages == ({"role": "user", "content": "plain text"},)
    assert second.ground_truth == ["a", "b"] and second.data_source == "prompts"


def test_verl_parquet_rows(tmp_path: Path):
    rows = [{"data_source": "gsm8k", "prompt": [{"role": "user", "content": f"q{i}"}], "ability": "math",
             "reward_model": {"style": "rule", "ground_truth": str(i)}, "extra_info": {"index": i}}
            for i in range(3)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train.parquet")
    prompts, _ = load_prompts(tmp_path / "train.parquet")
    assert [(p.id, p.ground_truth, p.extra_info["index"]) for p in prompts] == [
        ("train:0", "0", 0), ("train:1", "1", 1), ("train:2", "2", 2)]


def test_folder_reads_every_file_in_name_order(tmp_path: Path):
    write_jsonl(tmp_path / "b.jsonl", [{"id": "b1", "prompt": "x"}])
    write_jsonl(tmp_path / "a.jsonl", [{"id": "a1", "prompt": "y"}])
    (tmp_path / "notes.txt").write_text("ignored")
    assert [p.id for p in load_prompts(tmp_path)[0]] == ["a1", "b1"]


@pytest.mark.parametrize("line,field,reason", [
    ("{not json", None, "malformed JSON"),
    ('["a list"]', None, "expected a JSON object"),
    ('{"id": "x"}', "prompt", "Field required"),
    ('{"prompt": []}', "prompt", "is empty"),
    ('{"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}', "prompt",
     "must end with a user message"),
    ('{"prompt": [{"role": "robot", "content": "q"}]}', "prompt.0.role", "Input should be"),
    ('{"prompt": "q", "extra_info": "not a dict"}', "extra_info", "valid dictionary"),
])
def test_a_bad_record_names_file_line_and_field(tmp_path: Path, line: str, field: str | None, reason: str):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"id": "ok", "prompt": "fine"}, line])
    with pytest.raises(DatasetError) as err:
        load_prompts(path)
    assert err.value.file == str(path) and err.value.record == "line 2" and err.value.field == field
    assert reason in err.value.reason
    prompts, errors = load_prompts(path, skip_invalid=True)
    assert [p.id for p in prompts] == ["ok"] and len(errors) == 1 and "line 2" in str(errors[0])


def test_duplicate_ids_are_an_error(tmp_path: Path):
    path = write_jsonl(tmp_path / "dup.jsonl", [{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}])
    with pytest.raises(DatasetError, match=r"line 2: field 'id': duplicate id 'a' \(first at dup.jsonl line 1\)"):
        load_prompts(path)


@pytest.mark.parametrize("name,reason", [("missing.jsonl", "no such file"), ("data.csv", "expected a .jsonl")])
def test_missing_or_unsupported_files(tmp_path: Path, name: str, reason: str):
    if name.endswith(".csv"):
        (tmp_path / name).write_text("a,b\n")
    with pytest.raises(DatasetError, match=reason):
        load_prompts(tmp_path / name)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="folder has no"):
        load_prompts(empty)


def test_registry_and_the_shipped_toy_prompts():
    assert "prompts" in ENVIRONMENTS
    prompts, errors = ENVIRONMENTS.load("prompts")(REPO / "configs/train/data/toy_prompts.jsonl")
    assert len(prompts) == 8 and not errors and {p.ground_truth for p in prompts} == {"e"}
