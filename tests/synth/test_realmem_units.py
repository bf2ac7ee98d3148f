"""RealMem-style synthesis without Ray: inputs, plan validators, the timeline, the time-control
check, the public-format round trip, and the per-persona state machine driven by a scripted
engine (control flow only; the real engines run it in tests/distributed/data/test_synth_realmem_ray.py)."""

from __future__ import annotations

import json

import pytest

from mnemoray.config.synth import RealMemSynthConfig
from mnemoray.llm.schema_instance import instance_for
from mnemoray.llm.types import ChatResult
from mnemoray.records import MemoryItem
from mnemoray.synth.realmem import plan as PL
from mnemoray.synth.realmem.inputs import load_personas
from mnemoray.synth.realmem.machine import PersonaMachine, drive
from mnemoray.synth.realmem.public import read_public, write_public
from mnemoray.synth.realmem.replay import new_memory
from mnemoray.synth.realmem.timecheck import FUTURE_EVENT, FUTURE_MEMORY, time_problems
from repo_paths import DATA

REALMEM = DATA / "realmem"
FOLDER = REALMEM / "all_persona_topic"


def small_cfg(**over) -> RealMemSynthConfig:
    base = {"personas": str(FOLDER), "target_tokens": 100_000,
            "plan": {"projects": 2, "phases": 1, "max_sessions_per_event": 1},
            "dialogue": {"max_turns": 10, "regenerate": 1}}
    for key, value in over.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return RealMemSynthConfig.model_validate(base)


def valid_answer(request, **fixed):
    """A schema-valid answer varied by the request id (what the instant endpoint does)."""
    value = instance_for(request.json_schema, salt=request.id)
    kind = request.id.split(":")[1] if request.id.startswith("sessions:") else request.id.split(":")[0]
    value.update(fixed.get(kind, {}))
    if request.id.startswith("sessions:assistant"):
        enum = request.json_schema["properties"]["used_memory"].get("items", {}).get("enum")
        value["used_memory"] = enum[:1] if enum else []
    return value


# -- inputs ------------------------------------------------------------------------------------

def test_realmem_persona_files_load_with_goals_and_topic_attributes():
    seeds, errors = load_personas(FOLDER, projects=3)
    assert not errors and len(seeds) == 21
    lin = next(s for s in seeds if s["name"] == "Lin Wanyu")
    assert len(lin["goals"]) == 3 and lin["goals"][0]["title"] == "Pre-holiday Fat Loss Preparation"
    assert lin["goals"][1]["topic_name"] == "Travel Planning" and "Attraction Scheme" in lin["goals"][1]["attributes"]
    assert "Shenzhen" in lin["profile"]
    assert len({s["id"] for s in seeds}) == 21 and load_personas(FOLDER)[0][0]["id"] == seeds[0]["id"]


def test_bad_persona_records_are_listed_and_the_rest_is_used(tmp_path):
    path = tmp_path / "people.jsonl"
    path.write_text("\n".join([
        json.dumps({"name": "Ada", "description": "a sailor", "goals": [{"title": "Cross the Atlantic",
                                                                         "topic_id": "travel_planning"}]}),
        json.dumps({"description": "no name"}),
        "{not json",
        json.dumps({"name": "Bo", "description": "a baker", "goals": "bake"}),
        json.dumps({"name": "Cy", "description": "a cook", "goals": [{"description": "no title"}]}),
        json.dumps({"name": "Di", "description": "no goals given"}),  # goals drawn from the topics file
    ]) + "\n")
    seeds, errors = load_personas(path, goals_file=FOLDER / "topic&goal&attr.json")
    assert [s["name"] for s in seeds] == ["Ada", "Di"]
    assert seeds[1]["goals"] and seeds[1]["goals"][0]["title"]
    where = {(e.record, e.field) for e in errors}
    assert where == {("line 2", "name"), ("line 3", None), ("line 4", "goals"), ("line 5", "goals[0].title")}
    assert all(e.file == str(path) for e in errors)
    _, errors = load_personas(path)  # no topics file: a persona without goals is an error too
    assert ("line 6", "goals") in {(e.record, e.field) for e in errors}


# -- the public format ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["Kenta_Tanaka", "Pak_Budi"])
def test_a_public_realmem_file_written_back_by_our_writer_is_equal(name, tmp_path):
    source = REALMEM / f"{name}_dialogues_256k.json"
    out = write_public(read_public(source), tmp_path)
    original, ours = json.loads(source.read_text()), json.loads(out.read_text())
    assert ours == original
    assert json.dumps(ours) == json.dumps(original)  # same key order too


# -- plan validators and the timeline ---------------------------------------------------------------

def outline_for(cfg):
    seeds, _ = load_personas(FOLDER, projects=2)
    goal = seeds[0]["goals"][0]
    parsed = {"project_name": "Cut", "summary": "lose weight", "phases": [{"name": "a", "objective": "b"}]}
    return seeds[0], PL.parse_outline(seeds[0], goal, 0, ChatResult(id="x", parsed=parsed), cfg)


def test_event_validator_counts_states_and_repairs_dates():
    cfg = small_cfg()
    _, outline = outline_for(cfg)
    with pytest.raises(PL.Invalid, match="wrong_event_count"):
        PL.parse_events(outline, ChatResult(id="x", parsed={"events": []}), cfg)
    bad_state = [{"name": "n", "date": "2025-01-10", "state": "explode", "attribute": "a", "detail": "d"}] * 3
    with pytest.raises(PL.Invalid, match="bad_event_state"):
        PL.parse_events(outline, ChatResult(id="x", parsed={"events": bad_state}), cfg)
    events = [{"name": f"e{i}", "date": d, "state": "update", "attribute": "a", "detail": "d"}
              for i, d in enumerate(["2025-03-01", "1999-01-01", "not a date", "2025-02-01"])]
    got = PL.parse_events(outline, ChatResult(id="x", parsed={"events": events}), cfg)
    dates = [e["date"] for e in got["events"]]
    assert dates == sorted(dates) and outline["start"] <= dates[0] and dates[-1] <= outline["end"]
    assert got["events"][0]["state"] == "create" and got["dates_repaired"] == 3
    with pytest.raises(PL.Invalid, match="llm_http"):
        PL.parse_events(outline, ChatResult(id="x", error="503", error_kind="http"), cfg)


def test_the_timeline_interleaves_projects_with_a_cooldown_and_never_goes_back():
    plans = [{"id": f"{p}{i}", "project_id": p, "event_index": i, "session_index": 0,
              "date": f"2025-01-{1 + i + (5 if p == 'b' else 0):02d}"} for p in "ab" for i in range(4)]
    order = PL.timeline(plans, cooldown=1)
    projects = [t["project_id"] for t in order]
    assert projects == ["a", "b", "a", "b", "a", "b", "a", "b"]
    days = [t["day"] for t in order]
    assert days == sorted(days) and [t["order"] for t in order] == list(range(8))
    for pid in "ab":  # order inside a project kept
        assert [t["event_index"] for t in order if t["project_id"] == pid] == [0, 1, 2, 3]
    assert [t["project_id"] for t in PL.timeline(plans, cooldown=0)][:4] == ["a", "a", "a", "a"]


# -- time control -------------------------------------------------------------------------------

def test_time_check_flags_future_events_and_future_memory_only():
    events = [{"name": "Kyoto temple night tour", "date": "2025-05-01"},
              {"name": "Booked Osaka ramen class", "date": "2025-01-01"}]
    turns = [{"speaker": "User", "content": "I loved the Osaka ramen class I booked"},
             {"speaker": "Assistant", "content": "ok", "memory_used": [{"session_uuid": "old", "content": "x"}],
              "memory_session_uuids": ["old"]}]
    assert time_problems(turns, "2025-02-01", events, {"old"}, 0.75) == []
    turns[0]["content"] += ", and the Kyoto temple night tour next"
    turns[1]["memory_session_uuids"] = ["old", "later"]
    reasons = [r for r, _ in time_problems(turns, "2025-02-01", events, {"old"}, 0.75)]
    assert reasons == [FUTURE_EVENT, FUTURE_MEMORY]


# -- the state machine ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def persona():
    return load_personas(FOLDER, projects=2)[0][0]


def run_machine(persona, cfg, embedder, script, memory=None):
    from fakes import ScriptedEngine

    engine = ScriptedEngine(script)
    machine = drive(PersonaMachine(persona, cfg, memory or new_memory(cfg, embedder)), engine)
    rows = machine.drain()
    machine.rows = rows
    by_stage: dict[str, list] = {}
    for stage, row in rows:
        by_stage.setdefault(stage, []).append(row)
    kept = {s: [r for row in rs for r in json.loads(row["kept"])] for s, rs in by_stage.items()}
    rejects = {s: [r for row in rs for r in json.loads(row["rejects"])] for s, rs in by_stage.items()}
    return machine, engine, kept, rejects


def test_a_scripted_persona_goes_through_every_stage_in_time_order(persona, embedder, tmp_path):
    from mnemoray.loaders.realmem import iter_realmem

    cfg = small_cfg()
    never = lambda r: valid_answer(r, evaluator={"goal_reached": False, "progress": 3})  # noqa: E731
    machine, engine, kept, rejects = run_machine(persona, cfg, embedder, never)
    assert len(kept["outlines"]) == 2 and len(kept["events"]) == 2
    assert all(3 <= len(e["events"]) <= 5 for e in kept["events"])
    sessions = kept["sessions"]
    assert len(sessions) == len(kept["session_plans"]) == len(kept["memory"]) > 2
    assert not any(rejects.values())
    for s in sessions:  # no goal reached: every session runs to max_turns
        assert s["turns"] == cfg.dialogue.max_turns and s["end_reason"] == "max_turns"
    # memory only from earlier sessions; the first session cannot use any
    order = [s["id"] for s in sorted(sessions, key=lambda s: s["order"])]
    first = min(sessions, key=lambda s: s["order"])
    assert first["queries"] == 0
    queries = 0
    for s in sessions:
        for user, answer in zip(s["public"]["dialogue_turns"][::2], s["public"]["dialogue_turns"][1::2]):
            if user["is_query"]:
                queries += 1
                assert user["query_id"] and answer["memory_used"]
                assert all(order.index(u) < order.index(s["id"]) for u in answer["memory_session_uuids"])
            else:
                assert "memory_used" not in answer
    assert queries > 0
    # agents' calls go one at a time within the persona, the plans in one batch per stage
    assert [len(b) for b in engine.calls[:3]] == [2, 2, len(kept["session_plans"])]
    path = write_public(machine.public_history(), tmp_path, "Lin_Wanyu")
    (sample,) = list(iter_realmem(path))
    assert len(sample.history.sessions) == len(sessions) and len(sample.queries) == queries
    assert kept["histories"][0]["queries"] == queries
    # every call is counted once, by the stage that made it
    calls = {s: sum(row["calls"] for st, row in machine.rows if st == s) for s in ("sessions", "memory", "outlines")}
    assert sum(calls.values()) + sum(row["calls"] for st, row in machine.rows if st not in calls) == len(engine.seen)
    assert calls["outlines"] == 2
    assert calls["sessions"] == sum(1 for r in engine.seen if r.id.startswith("sessions:"))
    assert calls["memory"] == sum(1 for r in engine.seen if r.metadata.get("stage") == "memory" or
                                  r.metadata.get("call", "").startswith("realmem/"))


def test_the_goal_evaluator_ends_a_session_after_the_minimum_turns(persona, embedder):
    cfg = small_cfg()
    reached = lambda r: valid_answer(r, evaluator={"goal_reached": True, "progress": 10})  # noqa: E731
    _, engine, kept, _ = run_machine(persona, cfg, embedder, reached)
    assert {s["turns"] for s in kept["sessions"]} == {cfg.dialogue.min_turns}
    assert {s["end_reason"] for s in kept["sessions"]} == {"goal_reached"}
    # the evaluator scored every round
    evaluator = [r for r in engine.seen if r.id.startswith("sessions:evaluator")]
    assert len(evaluator) == len(kept["sessions"]) * cfg.dialogue.min_turns // 2


def test_a_user_turn_leaking_a_future_event_is_regenerated_then_rejected(persona, embedder):
    cfg = small_cfg(dialogue={"regenerate": 1})
    leak = "Kyoto temple night tour"

    def script(request):
        value = valid_answer(request)
        if request.id.startswith("events:"):  # the last event of each project is far ahead, named `leak`
            value["events"][-1].update(name=leak, date="2025-12-30")
        if request.id.startswith("sessions:user:") and request.id.split(":")[3] == "0":
            value["message"] = f"By the way, about the {leak}..."  # the first attempt of every session leaks
        return value

    _, _, kept, rejects = run_machine(persona, cfg, embedder, script)
    last = max(e["date"] for rec in kept["events"] for e in rec["events"] if e["name"] == leak)
    ahead = [s for s in kept["sessions"] if s["day"] < last]  # sessions before the leaked event: flagged
    assert ahead and all(s["regenerated_for"] == [FUTURE_EVENT] and s["attempts"] == 2 for s in ahead)
    assert all(s["regenerated_for"] == [] for s in kept["sessions"] if s["day"] >= last)
    assert all(leak not in t["content"] for s in ahead for t in s["public"]["dialogue_turns"])

    always = lambda r: {**script(r), "message": f"the {leak} was great"} if r.id.startswith("sessions:user") \
        else script(r)  # noqa: E731
    _, _, kept, rejects = run_machine(persona, small_cfg(dialogue={"regenerate": 1}), embedder, always)
    assert {s["day"] >= last for s in kept.get("sessions", [])} <= {True}
    assert len(rejects["sessions"]) == len(ahead)
    assert {r["reason"] for r in rejects["sessions"]} == {FUTURE_EVENT}
    assert all(leak in r["detail"] and "after 1 regeneration" in r["detail"] and r["raw"] for r in rejects["sessions"])


def test_an_answer_citing_a_session_that_is_not_earlier_is_rejected(persona, embedder):
    """A memory store holding a point of a later session (e.g. a stale checkpoint) must not leak:
    the assistant may cite it, the check on the written session catches it."""
    cfg = small_cfg(dialogue={"regenerate": 0})
    memory = new_memory(cfg, embedder)
    from mnemoray.memory.ops import Provenance

    memory.points.add("the user will move to Mars next year", Provenance("future-session"),
                      {"type": "Dynamic", "tag": "Confirmed", "content": "the user will move to Mars next year"})
    _, _, kept, rejects = run_machine(persona, cfg, embedder, valid_answer, memory=memory)
    assert rejects["sessions"] and {r["reason"] for r in rejects["sessions"]} == {"time_leak_future_memory"}
    assert all("future-session" in r["detail"] for r in rejects["sessions"])
    assert isinstance(memory.points.values()[0], MemoryItem)


def test_failed_calls_become_rejects_with_their_raw_text(persona, embedder):
    def script(request):
        if request.id.startswith("outlines:"):
            return "I cannot plan that"
        return valid_answer(request)

    machine, _, kept, rejects = run_machine(persona, small_cfg(), embedder, script)
    assert not kept.get("outlines") and len(rejects["outlines"]) == 2
    assert {r["reason"] for r in rejects["outlines"]} == {"llm_parse"}
    assert all(r["raw"] == "I cannot plan that" for r in rejects["outlines"])
    assert kept["histories"][0]["sessions"] == 0 and machine.finished


# -- the command line's bad input ------------------------------------------------------------------

def test_the_cli_names_bad_input_before_starting_anything(tmp_path):
    from typer.testing import CliRunner

    from mnemoray.cli.main import app
    from repo_paths import REPO

    bad = tmp_path / "people.jsonl"
    bad.write_text(json.dumps({"description": "no name"}) + "\n")
    base = ["synth", "realmem", "--config", str(REPO / "configs/synth/realmem_local.yaml"),
            "--out", str(tmp_path / "o"), f"llm={REPO / 'configs/llm/openai_local.yaml'}", "llm_overrides=[]",
            f"tokenizer={tmp_path}"]
    result = CliRunner().invoke(app, [*base, "--personas", str(bad)])
    assert result.exit_code != 0
    assert "no valid personas" in result.output and "line 1" in result.output and "'name'" in result.output
    result = CliRunner().invoke(app, [*base, "dialogue.max_turns=4", "dialogue.min_turns=6", "plan.phasez=2"])
    assert result.exit_code != 0 and "plan.phasez" in result.output and "max_turns" in result.output


def test_a_machine_with_deferred_encodes_ends_like_one_encoding_itself(persona, embedder):
    """Deferred: the memory's encodes come out as EncodeRequests (a worker batches them over personas)."""
    from fakes import ScriptedEngine
    from mnemoray.llm.structured import generate_structured
    from mnemoray.synth.realmem.machine import EncodeRequest

    cfg = small_cfg()
    never = lambda r: valid_answer(r, evaluator={"goal_reached": False, "progress": 3})  # noqa: E731
    own, _, _, _ = run_machine(persona, cfg, embedder, never)

    class Refusing:  # a deferred machine never calls its encoder itself
        dim = embedder.dim

        def encode(self, texts):
            raise AssertionError("a deferred machine must ask for its vectors")

    machine = PersonaMachine(persona, cfg, new_memory(cfg, Refusing(), deferred=True))
    engine, asked = ScriptedEngine(never), []
    requests = machine.start()
    while requests:
        if isinstance(requests, EncodeRequest):
            asked.append(requests.texts)
            requests = machine.feed_vectors(embedder.encode(requests.texts))
        else:
            requests = machine.feed(generate_structured(engine, requests, max_retries=1))
    assert len(asked) > len(own.sessions)  # retrieval in the dialogues, dedup in the memory manager
    assert machine.drain() == own.rows
    assert machine.public_history() == own.public_history()
    with pytest.raises(ValueError, match="one vector per text"):
        machine.feed_vectors(embedder.encode(["one"]))


def test_the_report_warns_of_short_histories_and_missing_query_turns():
    from mnemoray.synth.realmem.report import notes

    stats = {"histories": {"count": 3, "reached_target": 1, "target_tokens": 4000}, "sessions": {"queries": 0}}
    short, no_queries = notes(stats)
    assert short.startswith("2 of 3 histories ended below the target of 4,000 tokens")
    assert "plan.phases" in short and "eval retrieval" in no_queries
    stats = {"histories": {"count": 3, "reached_target": 3, "target_tokens": 4000}, "sessions": {"queries": 5}}
    assert notes(stats) == []


def test_the_report_lists_invalid_persona_records_with_file_record_field_and_reason(tmp_path):
    from mnemoray.loaders.errors import DatasetError
    from mnemoray.synth.realmem.report import write_report

    cfg = small_cfg(out=str(tmp_path))
    bad = DatasetError(tmp_path / "people.jsonl", "line 2", "name", "missing or empty")
    stats = write_report(cfg, 0, [bad.to_dict()])
    assert stats["personas"]["invalid"] == 1
    report = (tmp_path / "report.md").read_text()
    assert f"- {tmp_path / 'people.jsonl'}: record line 2: field 'name': missing or empty" in report
