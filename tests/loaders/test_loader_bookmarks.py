"""The BOOKMARKS story loader: shared data, malformed files, and `memory build` on it through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mnemoray.cli.main import app
from mnemoray.loaders import DatasetError, dataset_files, iter_dataset, load_dataset
from mnemoray.records import EvalSample
from repo_paths import REPO


@pytest.fixture(scope="module")
def bookmarks_dir(data_root) -> Path:
    return data_root / "bookmarks"


def _split(entries):
    samples = [e for e in entries if isinstance(e, EvalSample)]
    errors = [e for e in entries if isinstance(e, DatasetError)]
    return samples, errors


def _write(folder: Path, name: str, payload) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / name
    file.write_text(payload if isinstance(payload, str) else json.dumps(payload), encoding="utf-8")
    return file


def test_shared_data_counts_order_and_ids(bookmarks_dir):
    samples, errors = load_dataset("bookmarks", bookmarks_dir)
    assert not errors
    assert [s.history.id for s in samples] == ["haruhi", "kon"]
    for s in samples:
        raw = json.loads((bookmarks_dir / f"title2action_series.{s.history.id}.json").read_text(encoding="utf-8"))
        h = s.history
        assert s.queries == [] and h.dataset == "bookmarks"
        assert [x.metadata["title"] for x in h.sessions] == list(raw)  # story order kept
        assert [x.id for x in h.sessions] == [f"{h.id}:{title}" for title in raw]
        assert all(x.timestamp is None for x in h.sessions)
        for session, actions in zip(h.sessions, raw.values()):
            assert [(t.speaker, t.text) for t in session.turns] == [(a["character"], a["action"]) for a in actions]
            assert [t.index for t in session.turns] == list(range(len(actions)))
        turn_ids = [t.id for x in h.sessions for t in x.turns]
        assert len(turn_ids) == sum(len(v) for v in raw.values()) == len(set(turn_ids))
    haruhi, kon = (s.history for s in samples)
    assert (len(haruhi.sessions), len(kon.sessions)) == (28, 57)
    assert haruhi.sessions[0].turns[0].id == "haruhi:The Melancholy of Haruhi Suzumiya Part 1#t0"
    assert haruhi.persona is not None and haruhi.persona.name == "Haruhi & Kyon & Nagato & Koizumi & Asahina"
    assert kon.metadata["minor_characters"] == ["Sawako", "Nodoka", "Ui", "Jun"]
    again, _ = load_dataset("bookmarks", bookmarks_dir)
    assert [s.model_dump() for s in again] == [s.model_dump() for s in samples]  # deterministic


def test_folder_lists_work_files_only_and_single_file_reads_characters_beside_it(bookmarks_dir, tmp_path):
    assert [p.name for p in dataset_files("bookmarks", bookmarks_dir)] == [
        "title2action_series.haruhi.json", "title2action_series.kon.json"]
    samples, errors = _split(list(iter_dataset("bookmarks", bookmarks_dir / "title2action_series.kon.json")))
    assert not errors and [s.history.id for s in samples] == ["kon"]
    assert samples[0].history.persona.name.startswith("Yui & Ritsu")
    _write(tmp_path, "all_characters.json", {"other": {"major": ["X"]}})
    with pytest.raises(DatasetError, match="no .json files"):
        dataset_files("bookmarks", tmp_path)
    lone = _write(tmp_path, "title2action_series.unknown.json", {"T": [{"action": "walks", "character": "A"}]})
    samples, errors = _split(list(iter_dataset("bookmarks", lone)))
    assert not errors and samples[0].history.persona is None  # a work the character list does not name
    errors = list(iter_dataset("bookmarks", tmp_path / "all_characters.json"))
    assert len(errors) == 1 and "character list" in str(errors[0])


def test_malformed_files_name_file_record_and_field_and_keep_good_records(tmp_path):
    folder = tmp_path / "bm"
    _write(folder, "title2action_series.broken.json", '{"Ch 1": [{"action": "a", "character": "A"}')
    _write(folder, "title2action_series.list.json", [{"action": "a", "character": "A"}])
    _write(folder, "title2action_series.mixed.json", {
        "Ch 1": [{"action": "Ann opens the door", "character": "Ann"},
                 {"character": "Bob"},
                 {"action": "Bob waves", "character": "Bob"}],
        "Ch 2": "not a list",
        "Ch 3": [{"action": "   ", "character": "Ann"}, {"action": "Ann sits", "character": 7}],
        "Ch 4": [{"action": "Rain falls", "character": "Environment"}],
    })
    _write(folder, "all_characters.json", {"mixed": {"major": ["Ann"], "minor": "Bob"}})
    entries = list(iter_dataset("bookmarks", folder))
    samples, errors = _split(entries)
    messages = [str(e) for e in errors]
    broken, listed = str(folder / "title2action_series.broken.json"), str(folder / "title2action_series.list.json")
    mixed, chars = str(folder / "title2action_series.mixed.json"), str(folder / "all_characters.json")
    assert any(m.startswith(broken) and "malformed JSON" in m for m in messages)
    assert any(m.startswith(listed) and "expected a JSON object" in m for m in messages)
    assert f"{mixed}: record Ch 1: field '[1].action': missing (the action text)" in messages
    assert any(m.startswith(f"{mixed}: record Ch 2:") and "expected a list" in m for m in messages)
    assert f"{mixed}: record Ch 3: field '[0].action': empty (the action text)" in messages
    assert f"{mixed}: record Ch 3: field '[1].character': must be a string (who acts)" in messages
    assert f"{chars}: record mixed: field 'minor': must be a list of character names" in messages
    assert all(e.file in (broken, listed, mixed, chars) for e in errors)
    # the good records of the mixed work are kept, with ids by position in the source list
    assert [s.history.id for s in samples] == ["mixed"]
    h = samples[0].history
    assert [x.id for x in h.sessions] == ["mixed:Ch 1", "mixed:Ch 4"]
    assert [t.id for t in h.sessions[0].turns] == ["mixed:Ch 1#t0", "mixed:Ch 1#t2"]
    assert h.persona is None  # the character entry was invalid
    with pytest.raises(DatasetError, match="malformed JSON"):
        load_dataset("bookmarks", folder)  # without --skip-invalid the first error stops the load
    kept, listed_errors = load_dataset("bookmarks", folder, skip_invalid=True)
    assert [s.history.id for s in kept] == ["mixed"] and len(listed_errors) == len(errors)


def test_work_without_any_valid_title_is_an_error(tmp_path):
    file = _write(tmp_path, "title2action_series.empty.json", {"Ch 1": [], "Ch 2": [{"character": "A"}]})
    samples, errors = _split(list(iter_dataset("bookmarks", file)))
    assert not samples
    assert [str(e) for e in errors] == [
        f"{file}: record Ch 2: field '[0].action': missing (the action text)",
        f"{file}: no title with valid actions",
    ]


def test_eval_retrieval_on_bookmarks_fails_with_one_line(bookmarks_dir, tmp_path):
    result = CliRunner().invoke(app, ["eval", "retrieval", "--dataset", "bookmarks", "--data", str(bookmarks_dir),
                                      "--memory", "rag-bm25", "--out", str(tmp_path / "eval")])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert lines == [f"error: {bookmarks_dir}: no history with scorable queries"]
    assert not (tmp_path / "eval").exists()


@pytest.mark.integration
def test_cli_memory_build_summary_on_a_slice(bookmarks_dir, tmp_path, tiny_cache, ray_local):
    raw = json.loads((bookmarks_dir / "title2action_series.haruhi.json").read_text(encoding="utf-8"))
    data = tmp_path / "data"
    _write(data, "title2action_series.haruhi.json", {t: raw[t][:4] for t in list(raw)[:3]})
    _write(data, "all_characters.json", (bookmarks_dir / "all_characters.json").read_text(encoding="utf-8"))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [
        "memory", "build", "--framework", "summary", "--dataset", "bookmarks", "--data", str(data),
        "--llm", str(REPO / "configs" / "llm" / "tiny_local.yaml"), "--limit", "1", "--sessions", "2",
        "--out", str(out), f"llm_overrides=['tiny_cache_dir={tiny_cache}']", "memory.llm_call.max_tokens=64",
        "torch_threads=1", "ray.workers=1",
    ])
    assert result.exit_code == 0, result.output
    assert "summary: 1 histories" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["histories"] == 1 and summary["totals"]["calls"] >= 1
    assert [p.name for p in (out / "banks").glob("*.parquet")]
    assert (out / "trajectories.jsonl").read_text().strip()
    rows = [json.loads(x) for x in (out / "trajectories.jsonl").read_text().splitlines()]
    assert {r["history_id"] for r in rows} == {"haruhi"}
    sessions = {s for r in rows for s in ([r["session_id"]] if r.get("session_id") else [])}
    assert sessions <= {f"haruhi:{t}" for t in list(raw)[:2]}
