"""Synthesis domain logic without Ray: personas, checks, stage parsing, assembly, store, loader."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mnemoray.config.synth import INSIGHT_TYPES, RoleMemoConfig
from mnemoray.llm.types import ChatResult
from mnemoray.loaders.errors import DatasetError
from mnemoray.synth import assembly, checks, stages
from mnemoray.synth.personas import load_seed_personas
from mnemoray.synth.store import StageStore, expand
from repo_paths import REPO


def _cfg(tmp_path: Path, **kw) -> RoleMemoConfig:
    return RoleMemoConfig(personas=tmp_path / "p.json", out=tmp_path / "out", **kw)


# -- personas ----------------------------------------------------------------------------------

def test_msc_pairs_become_two_personas_each_with_stable_ids(data_root):
    first, errors = load_seed_personas(data_root / "personas" / "msc_personas_all.json", limit=6)
    again, _ = load_seed_personas(data_root / "personas" / "msc_personas_all.json", limit=6)
    assert not errors and len(first) == 6
    assert [p.id for p in first] == [p.id for p in again]
    assert first[0].name == "train/0/Speaker 1" and first[1].name == "train/0/Speaker 2"
    assert "Metallica" in first[0].description and first[0].facts


def test_bad_persona_records_are_listed_and_the_rest_kept(tmp_path):
    path = tmp_path / "personas.jsonl"
    path.write_text("\n".join([
        json.dumps({"name": "a", "description": "I grow tomatoes on my balcony."}),
        "{not json",
        json.dumps({"name": "b", "description": "", "facts": []}),
        json.dumps({"name": "c", "facts": ["I sing.", 3]}),
        json.dumps(["not", "an", "object"]),
        json.dumps({"name": "d", "facts": ["I drive a bus.", "I have twins."]}),
        json.dumps({"name": "a again", "description": "I grow tomatoes on my balcony."}),
    ]))
    personas, errors = load_seed_personas(path)
    assert [p.name for p in personas] == ["a", "d"]  # the duplicate of "a" collapses
    messages = [e.message() for e in errors]
    assert any("line 2" in m and "malformed JSON" in m for m in messages)
    assert any("line 3" in m and "empty persona" in m for m in messages)
    assert any("line 4" in m and "facts[1]" in m for m in messages)
    assert any("line 5" in m and "expected an object" in m for m in messages)
    assert all(str(path) in m for m in messages)


def test_truncated_msc_file_keeps_what_was_read_and_names_the_file(tmp_path, data_root):
    text = (data_root / "personas" / "msc_personas_all.json").read_text()[:5000]
    path = tmp_path / "cut.json"
    path.write_text(text)
    personas, errors = load_seed_personas(path)
    assert personas and errors
    assert str(path) in errors[-1].message() and "truncated" in errors[-1].message()


def test_missing_persona_file_is_an_error(tmp_path):
    personas, errors = load_seed_personas(tmp_path / "nope.json")
    assert not personas and "no such persona file" in errors[0].message()


# -- checks ------------------------------------------------------------------------------------

def test_four_criteria_keep_only_all_yes():
    assert checks.failed_criteria({"specific": True, "grounded": True, "non_trivial": True, "consistent": True}) == []
    assert checks.failed_criteria({"specific": True, "grounded": False, "non_trivial": "yes"}) == [
        "grounded", "non_trivial", "consistent"]


def test_plan_rounds_spreads_fragments_and_never_uses_round_zero():
    for key in range(50):
        rounds = checks.plan_rounds(2, 24, key)
        assert len(set(rounds)) == 2 and all(1 <= r < 24 for r in rounds) and rounds[0] < rounds[1]
    with pytest.raises(ValueError):
        checks.plan_rounds(3, 3, 0)


def _dialogue(n: int = 6) -> list[dict[str, str]]:
    return [{"user": f"small talk number {i} about weather", "assistant": f"nice reply {i}"} for i in range(n)]


FRAG = checks.Placement("f0", "I always take the 6am ferry to avoid the tourist crowds", 2)


def test_difficulty_passes_a_clean_dialogue_and_names_each_problem():
    rounds = _dialogue()
    rounds[2]["user"] = "Oh by the way, I always take the 6am ferry, avoids the tourist crowds."
    assert checks.difficulty_problems(rounds, [FRAG], 0.6, 0.6) == []

    echoed = [dict(r) for r in rounds]
    echoed[2]["assistant"] = "So you take the 6am ferry to avoid the tourist crowds!"
    assert checks.difficulty_problems(echoed, [FRAG], 0.6, 0.6) == ["assistant_echo:f0@2"]

    repeated = [dict(r) for r in rounds]
    repeated[4]["user"] = "Like I said: the 6am ferry always, tourist crowds are awful to avoid."
    assert checks.difficulty_problems(repeated, [FRAG], 0.6, 0.6) == ["fragment_repeated:f0@2,4"]

    missing = _dialogue()
    assert checks.difficulty_problems(missing, [FRAG], 0.6, 0.6) == ["fragment_missing:f0@2"]


def test_insert_missing_puts_the_fragment_in_its_planned_turn_only():
    rounds = _dialogue()
    assert checks.insert_missing(rounds, [FRAG], 0.6) == 1
    assert rounds[2]["user"].endswith(FRAG.text)
    assert checks.difficulty_problems(rounds, [FRAG], 0.6, 0.6) == []
    assert checks.insert_missing(rounds, [FRAG], 0.6) == 0  # already there


def test_safety_patterns_flag_by_name():
    assert checks.safety_flags(["Let's bake bread together"]) == []
    assert checks.safety_flags(["call me at 555-123-4567", "I want to kill myself"]) == ["contact_data", "self_harm"]


# -- stages: parsing LLM answers ------------------------------------------------------------------

PERSONA = {"id": "p-1", "persona_id": "p-1", "name": "x", "description": "I like hiking.", "facts": ["I like hiking."]}


def test_insight_answers_become_records_with_position_ids(tmp_path):
    cfg = _cfg(tmp_path, insights={"per_type": 2})
    request = stages.build_insights(PERSONA, cfg)
    for kind in INSIGHT_TYPES:
        prop = request.json_schema["properties"][kind]
        assert prop["minItems"] == prop["maxItems"] == 2
    parsed = {k: [f"{k} one", f"{k} two"] for k in INSIGHT_TYPES}
    out = stages.parse_insights(PERSONA, ChatResult(id="r", text=json.dumps(parsed), parsed=parsed), cfg)
    assert len(out.kept) == 8 and not out.rejects
    again = stages.parse_insights(
        PERSONA, ChatResult(id="r", text="{}", parsed={k: ["other"] * 2 for k in INSIGHT_TYPES}), cfg
    )
    assert [r["id"] for r in out.kept] == [r["id"] for r in again.kept]  # ids never hash generated text


def test_failed_llm_calls_are_rejects_that_keep_the_raw_text(tmp_path):
    cfg = _cfg(tmp_path)
    bad = ChatResult(id="r", text='{"truncated": ', error="no JSON found", error_kind="parse")
    out = stages.parse_insights(PERSONA, bad, cfg)
    assert not out.kept and out.rejects[0]["reason"] == "llm_parse" and out.rejects[0]["raw"] == '{"truncated": '
    out = stages.parse_insights(PERSONA, None, cfg)
    assert out.rejects[0]["reason"] == "llm_missing"


def _insight() -> dict:
    return {"id": "ins-1", "persona_id": "p-1", "persona": "I like hiking.", "insight_type": "value_judgment",
            "index": 0, "text": "Values solitude over praise."}


def test_insight_check_rejects_anything_short_of_four_yes(tmp_path):
    cfg = _cfg(tmp_path)
    no = {"specific": True, "grounded": True, "non_trivial": False, "consistent": True}
    out = stages.parse_insight_check(_insight(), ChatResult(id="r", text=json.dumps(no), parsed=no), cfg)
    assert out.rejects[0]["reason"] == "criteria" and "non_trivial" in out.rejects[0]["detail"]
    yes = dict(no, non_trivial=True)
    assert stages.parse_insight_check(_insight(), ChatResult(id="r", text="", parsed=yes), cfg).kept


def test_fact_query_rejects_trivial_or_duplicate_fragments(tmp_path):
    cfg = _cfg(tmp_path)

    def run(fragments):
        parsed = {"fragments": fragments, "question": "Why do you hike alone?", "connector": "c"}
        return stages.parse_fact_query(_insight(), ChatResult(id="r", text=json.dumps(parsed), parsed=parsed), cfg)

    ok = run(["I hike the ridge trail every sunday morning", "Group photos make me uneasy at parties"])
    assert ok.kept[0]["fragments"][1]["id"].endswith("-f1") and ok.kept[0]["core_insight"] == _insight()["text"]
    assert run(["ok", "I hike the ridge trail"]).rejects[0]["reason"] == "trivial_fragment"
    assert run(["I hike the ridge trail", "the ridge trail I hike"]).rejects[0]["reason"] == "duplicate_fragments"


def test_necessity_keeps_only_pairs_the_closed_book_answer_misses(tmp_path):
    cfg = _cfg(tmp_path)
    pair = {"id": "fq-1", "persona_id": "p-1", "question": "q", "core_insight": "i", "closed_book_answer": "a"}
    miss = {"verdict": "misses_insight", "reason": "generic"}
    hit = {"verdict": "captures_insight", "reason": "guessable"}
    assert stages.parse_necessity(pair, ChatResult(id="r", parsed=miss), cfg).kept
    assert (
        stages.parse_necessity(pair, ChatResult(id="r", parsed=hit), cfg).rejects[0]["reason"]
        == "answerable_without_memory"
    )


def _pair() -> dict:
    return {"id": "fq-1", "persona_id": "p-1", "persona": "I like hiking.", "insight_id": "ins-1",
            "insight_type": "value_judgment", "core_insight": "Values solitude.", "question": "Why alone?",
            "connector": "c", "fragments": [{"id": "fq-1-f0", "text": "I hike the ridge trail every sunday morning"},
                                            {"id": "fq-1-f1", "text": "Group photos make me uneasy at parties"}]}


def test_dialogue_parse_inserts_missing_fragments_and_counts_tokens(tmp_path):
    cfg = _cfg(tmp_path, dialogue={"rounds": 6})
    request = stages.build_dialogue(_pair(), cfg)
    assert request.json_schema["properties"]["rounds"]["minItems"] == 6
    rounds = _dialogue(6)
    out = stages.parse_dialogue(_pair(), ChatResult(id="r", parsed={"rounds": rounds}), cfg)
    record = out.kept[0]
    assert record["inserted"] == 2 and record["tokens"] > 0
    assert stages.parse_difficulty(record, None, cfg).kept
    short = stages.parse_dialogue(_pair(), ChatResult(id="r", parsed={"rounds": rounds[:3]}), cfg)
    assert short.rejects[0]["reason"] == "wrong_round_count"


def test_safety_reviews_only_flagged_dialogues(tmp_path):
    cfg = _cfg(tmp_path, dialogue={"rounds": 6})
    record = stages.parse_dialogue(_pair(), ChatResult(id="r", parsed={"rounds": _dialogue(6)}), cfg).kept[0]
    assert stages.build_safety(record, cfg) is None
    assert stages.parse_safety(record, None, cfg).kept
    record["rounds"][0]["assistant"] = "mail me at someone@example.com"
    assert stages.build_safety(record, cfg) is not None
    unsafe = stages.parse_safety(record, ChatResult(id="r", parsed={"safe": False, "reason": "contact"}), cfg)
    assert unsafe.rejects[0]["reason"] == "unsafe"
    off = _cfg(tmp_path, dialogue={"rounds": 6}, safety={"review_flagged": False})
    assert stages.build_safety(record, off) is None
    assert stages.parse_safety(record, None, off).rejects[0]["reason"] == "unsafe_patterns"


# -- assembly ------------------------------------------------------------------------------------

def _dlg(i: int, tokens: int = 100) -> dict:
    pair = dict(_pair(), id=f"fq-{i}")
    pair["fragments"] = [{"id": f"fq-{i}-f0", "text": "a"}, {"id": f"fq-{i}-f1", "text": "b"}]
    return {"id": f"dlg-{i}", "persona_id": "p-1", "tokens": tokens, "fact_query": pair,
            "placements": [{"fragment_id": f"fq-{i}-f0", "round": 1, "text": "a"},
                           {"fragment_id": f"fq-{i}-f1", "round": 4, "text": "b"}]}


def test_assembly_fills_to_the_budget_in_time_order_with_queries_last():
    from mnemoray.config.synth import AssemblyConfig

    pool = [assembly.PoolEntry(f"dis-{i}", 50 + i) for i in range(10)]
    h = assembly.assemble(PERSONA, [_dlg(1), _dlg(2)], pool, {"dlg-1": 5, "dlg-2": 5}, 2000, AssemblyConfig())
    assert h["total_tokens"] <= 2000 and h["total_tokens"] > 2000 - 60
    stamps = [s["timestamp"] for s in h["sessions"]]
    assert stamps == sorted(stamps)
    kinds = [s["kind"] for s in h["sessions"]]
    assert kinds[-2:] == ["query", "query"] and kinds.count("dialogue") == 2
    assert h["distractor_repeats"] > 0  # 10 pool sessions cannot fill 2,000 tokens
    assert len({s["session_id"] for s in h["sessions"]}) == len(h["sessions"])
    q = h["queries"][0]
    assert q["evidence_turn_ids"] == ["dlg-1#t2", "dlg-1#t8"]
    again = assembly.assemble(PERSONA, [_dlg(2), _dlg(1)], pool, {"dlg-1": 5, "dlg-2": 5}, 2000, AssemblyConfig())
    assert again == h  # deterministic, whatever order the dialogues arrive in


def test_assembly_never_exceeds_the_budget_and_drops_what_cannot_fit():
    from mnemoray.config.synth import AssemblyConfig

    h = assembly.assemble(PERSONA, [_dlg(1, 300), _dlg(2, 300)], [assembly.PoolEntry("d", 500)], {}, 400,
                          AssemblyConfig(allow_repeats=False))
    assert h["total_tokens"] <= 400 and h["dropped_dialogues"] == ["dlg-2"] and len(h["queries"]) == 1


# -- store -------------------------------------------------------------------------------------

def test_store_parts_without_done_are_orphans_and_removed(tmp_path):
    store = StageStore(tmp_path, "s")
    rows = [{"input_id": "a", "persona_id": "p", "kept": json.dumps([{"id": "k1", "persona_id": "p"}]),
             "rejects": json.dumps([{"id": "a", "persona_id": "p", "reason": "r", "detail": "", "raw": "x"}]),
             "calls": 1, "attempts": 2, "prompt_tokens": 3, "completion_tokens": 4, "latency_s": 0.5}]
    name = store.write_part(*expand(rows, "s"))
    assert store.done_ids() == {"a"}
    (store.folder("done") / name).unlink()  # as if killed before the done file landed
    assert store.clean_orphans() == 2
    assert store.done_ids() == set() and store.files("kept") == [] and store.files("rejects") == []
    store.write_part(*expand(rows, "s"))
    assert pq.read_table(store.files("rejects")[0]).column("stage").to_pylist() == ["s"]
    assert [r["id"] for r in store.iter_records()] == ["k1"]


def test_loader_names_the_file_when_the_dataset_is_incomplete(tmp_path):
    from mnemoray.loaders import load_dataset

    (tmp_path / "dataset").mkdir()
    with pytest.raises(DatasetError, match="personas.parquet"):
        load_dataset("rolememo", tmp_path)


# -- command line: bad input fails fast with one line ------------------------------------------------

def test_cli_names_the_persona_file_when_no_persona_is_valid(tmp_path):
    from typer.testing import CliRunner

    from mnemoray.cli.main import app

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"name": "x"}\n{oops\n')
    config = REPO / "configs" / "synth" / "rolememo_local.yaml"
    result = CliRunner().invoke(app, ["synth", "rolememo", "--config", str(config), "--personas", str(bad),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert (
        "no valid personas" in result.output
        and str(bad) in result.output
        and "line 1" in result.output
        and "empty persona" in result.output
    )

    result = CliRunner().invoke(app, ["synth", "rolememo", "--config", str(config), "dialogue.rounds=1"])
    assert result.exit_code == 2 and "dialogue.rounds" in result.output
