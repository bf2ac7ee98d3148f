"""`mnemoray model init-tiny` and `mnemoray llm generate` end to end on the tiny model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jsonschema
from typer.testing import CliRunner

from mnemoray.cli import llm_cmd, model_cmd
from mnemoray.config import REPO_ROOT

SCHEMA = {
    "type": "object",
    "properties": {"fact": {"type": "string", "maxLength": 16},
                   "kind": {"enum": ["preference", "event", "relation"]},
                   "session": {"type": "integer", "minimum": 0, "maximum": 50}},
    "required": ["fact", "kind", "session"],
}


def hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_init_tiny_command_is_deterministic(tiny_model: Path, tmp_path: Path):
    from mnemoray.cli.main import app  # the groups are registered on the main command

    result = CliRunner().invoke(app, ["model", "init-tiny", "--out", str(tmp_path / "m"), "--seed", "0"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith(str(tmp_path / "m"))
    assert hashes(tmp_path / "m") == hashes(tiny_model)
    bad = CliRunner().invoke(model_cmd.app, ["init-tiny", "--out", str(tmp_path / "x"), "--arch", "gpt9"])
    assert bad.exit_code == 2 and "gpt9" in bad.output


def test_generate_end_to_end(tiny_model: Path, tmp_path: Path):
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(json.dumps(SCHEMA))
    inp = write_jsonl(tmp_path / "in.jsonl", [
        {"id": "free", "messages": [{"role": "user", "content": "hello"}], "params": {"max_tokens": 5}},
        {"id": "fact1", "messages": [{"role": "user", "content": "extract a fact"}], "seed": 3,
         "params": {"temperature": 0.8, "max_tokens": 200}},
        {"id": "own", "messages": [{"role": "user", "content": "yes or no"}],
         "json_schema": {"type": "object", "properties": {"yes": {"type": "boolean"}}, "required": ["yes"]}},
    ])
    out = tmp_path / "out" / "results.jsonl"
    args = ["generate", "--engine", "hf", "--model", str(tiny_model), "--input", str(inp),
            "--json-schema", str(schema_file), "--out", str(out), "--max-tokens", "60"]
    result = CliRunner().invoke(llm_cmd.app, args)
    assert result.exit_code == 0, result.output
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == ["free", "fact1", "own"]
    assert all(set(r) >= {"id", "text", "parsed", "error", "usage"} for r in rows)
    assert all(r["error"] is None and r["usage"]["prompt_tokens"] > 0 for r in rows)
    assert rows[0]["usage"]["completion_tokens"] <= 60  # --max-tokens applies to every request
    jsonschema.validate(rows[1]["parsed"], SCHEMA)  # the file schema, for the line without its own
    assert set(rows[2]["parsed"]) == {"yes"}  # a line's own schema wins
    assert "3 requests: 3 ok" in result.output


def test_generate_with_llm_config(tiny_cache: Path, tmp_path: Path):
    inp = write_jsonl(tmp_path / "in.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    out = tmp_path / "out.jsonl"
    args = ["generate", "--llm", str(REPO_ROOT / "configs/llm/tiny_local.yaml"), "--set",
            f"tiny_cache_dir={tiny_cache}", "--input", str(inp), "--out", str(out), "--max-tokens", "4"]
    result = CliRunner().invoke(llm_cmd.app, args)
    assert result.exit_code == 0, result.output
    (row,) = read_jsonl(out)
    assert row["error"] is None and 0 < row["usage"]["completion_tokens"] <= 4 and row["id"]


def test_malformed_input_line_names_file_and_line(tiny_model: Path, tmp_path: Path):
    inp = tmp_path / "bad.jsonl"
    inp.write_text('{"id": "ok", "messages": [{"role": "user", "content": "hi"}]}\n\n{"id": "broken", "messages": [\n')
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(llm_cmd.app, ["generate", "--engine", "hf", "--model", str(tiny_model),
                                              "--input", str(inp), "--out", str(out)])
    assert result.exit_code == 2
    assert f"{inp}:3: invalid JSON" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()
    inp.write_text('{"id": "x", "messages": [{"role": "user"}]}\n')
    result = CliRunner().invoke(llm_cmd.app, ["generate", "--engine", "hf", "--model", str(tiny_model),
                                              "--input", str(inp), "--out", str(out)])
    assert result.exit_code == 2 and f"{inp}:1: field 'messages.0.content'" in result.output


def test_generate_bad_engine_setup_is_one_line(tmp_path: Path):
    inp = write_jsonl(tmp_path / "in.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    runner = CliRunner()
    missing = runner.invoke(llm_cmd.app, ["generate", "--engine", "hf", "--model", str(tmp_path / "nope"),
                                          "--input", str(inp), "--out", str(tmp_path / "o.jsonl")])
    assert missing.exit_code == 2 and "no such model folder" in missing.output
    no_engine = runner.invoke(llm_cmd.app, ["generate", "--input", str(inp), "--out", str(tmp_path / "o.jsonl")])
    assert no_engine.exit_code == 2 and "--engine" in no_engine.output
