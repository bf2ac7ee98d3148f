"""BOOKMARKS: question matching (overlap, then a model check for close calls), lazy synchronization per tag
(state reset newest-first, concept keyword spans, behavioral per-action filter), grounding, failures, state."""

from __future__ import annotations

import json
import re

from mnemoray.config import MemoryConfig
from mnemoray.memory.bookmarks import (
    Bookmark,
    BookmarksMemory,
    Question,
    fit_entries,
    keyword_spans,
    parse_actions,
    parse_questions,
    parse_same,
    parse_state,
    token_overlap,
)
from mnemoray.memory.ops import OpError
from mnemoray.records import Persona, Session, Turn


def _session(sid: str, lines: list[str], date: str = "1 May 2023") -> Session:
    return Session(id=sid, timestamp=date, turns=[
        Turn(id=f"{sid}#t{i}", speaker="Ann" if i % 2 == 0 else "Bo", text=text, index=i)
        for i, text in enumerate(lines)])


def _memory(scripted, script, embedder, **settings) -> BookmarksMemory:
    cfg = MemoryConfig.model_validate({"name": "bookmarks", "bookmarks": {"chunk_turns": 2, **settings}})
    memory = BookmarksMemory(cfg, engine=scripted(script), embedder=embedder, max_retries=1)
    memory.log.history_id = "h"
    return memory


def _step(request) -> int:
    return int(re.search(r"\(step (\d+),", request.messages[1].content).group(1))


def _ask(**per_step):
    """A proposer: step n asks the questions given as s<n>=[(tag, query, keywords), ...]."""
    def propose(request):
        asked = per_step.get(f"s{_step(request)}", [])
        return {"questions": [{"tag": t, "query": q, "keywords": list(k)} for t, q, k in asked]}
    return propose


WHERE = ("state", "Where does Ann live?", ())
S1 = ["I live in Leeds.", "Nice city!", "I moved to York last week.", "Big change!"]
S2 = ["I bought a bike.", "Cool."]


def test_parsers_give_values_or_typed_errors():
    qs, errors = parse_questions({"questions": [
        {"tag": "State", "query": " Where does Ann live? ", "keywords": "Ann"},
        {"tag": "mood", "query": "x", "keywords": []},
        {"tag": "state", "query": "where does ann live", "keywords": []},  # the same question again
        {"tag": "concept", "query": "", "keywords": []},
        {"tag": "concept", "query": "Who is Max?", "keywords": [1]},
        {"tag": "behavioral", "query": "How does Bo react to news?", "keywords": ["Bo", " ", "x"]},
        7,
    ]})
    assert qs == [Question("state", "Where does Ann live?", ("Ann",)),
                  Question("behavioral", "How does Bo react to news?", ("Bo",))]
    assert [e.index for e in errors] == [1, 2, 3, 4, 6] and all(isinstance(e, OpError) for e in errors)
    assert parse_questions({"questions": None})[1][0].reason == "the answer has no 'questions' list"
    assert parse_same({"same": True}) == (True, None) and parse_same({"same": "yes"})[0] is None
    assert parse_state({"found": True, "answer": " York "}) == ("York", None)
    assert parse_state({"found": False, "answer": "ignored"}) == (None, None)
    for bad in ({"found": True, "answer": " "}, {"found": "true"}, {"found": True, "answer": 3}, []):
        answer, error = parse_state(bad)
        assert answer is None and isinstance(error, OpError)
    picked, errors = parse_actions({"actions": ["a3", "A1", "A9", 4, "A1"]}, ["A1", "A2", "A3"])
    assert picked == ["A1", "A3"] and [e.index for e in errors] == [2, 3]
    assert parse_actions({"actions": "A2"}, ["A1", "A2"]) == (["A2"], [])
    assert parse_actions("nope", ["A1"])[1][0].reason == "the answer has no 'actions' list"


def test_overlap_spans_and_answer_caps():
    assert token_overlap("Where does Ann live now?", "where does ann live") == 1.0
    assert token_overlap("Which city does Ann live in these days?", "Where does Ann live?") == 0.5
    assert token_overlap("What is it?", "What is it?") == 0.0  # no content words: never an overlap match
    text = "I adopted a dog named Max. He is shy. Maximum fun though! max loves walks."
    assert keyword_spans(text, ["Max"], 200) == "I adopted a dog named Max. ... max loves walks."
    assert keyword_spans(text, ["Max"], 10) == "I adopted"
    assert keyword_spans(text, ["cat"], 200) == ""
    entries = [["t1", "a" * 10], ["t2", "b" * 10], ["t3", "c" * 10]]
    assert fit_entries(entries, 23) == entries[1:] and fit_entries(entries, 5) == entries[2:]


def test_match_reuses_by_overlap_and_asks_the_model_only_for_close_calls(scripted, embedder):
    memory = _memory(scripted, lambda call, req: {"same": True}, embedder)
    live = Bookmark(id="b-live", query="Where does Ann live now?", tag="state")
    dog = Bookmark(id="b-dog", query="What is Ann's dog Max like?", tag="concept")
    memory.bookmarks = {b.id: b for b in (live, dog)}
    step = {"index": 0, "session_id": "h:S1", "timestamp": None, "turns": []}
    questions = [
        Question("state", "Where does Ann live now?"),
        Question("state", "Where does Ann live?"),
        Question("state", "Which city does Ann live in these days?"),
        Question("state", "What is Bo's favourite food?"),
        Question("concept", "Where does Ann live now?"),
    ]
    matches = memory.match(step, questions)
    assert [(m.bookmark.id if m.bookmark else None, m.how) for m in matches] == [
        ("b-live", "overlap"), ("b-live", "overlap"), ("b-live", "checked"), (None, "new"), (None, "new")]
    (match_call,) = memory.log.entries  # exactly one model check: the close call
    assert match_call["call"] == "bookmarks/match" and "Which city does Ann live in these days?" in \
        match_call["messages"][1]["content"]
    no = _memory(scripted, lambda call, req: {"same": False}, embedder)
    no.bookmarks = dict(memory.bookmarks)
    assert no.match(step, questions[2:3])[0].bookmark is None


def test_state_bookmarks_sync_lazily_newest_first_and_reset(scripted, embedder):
    def script(call, request):
        if call == "bookmarks/propose":
            return _ask(s0=[WHERE], s2=[WHERE])(request)
        chunk = request.messages[1].content
        if "moved to York" in chunk:
            return {"found": True, "answer": "Ann lives in York."}
        if "I live in Leeds" in chunk:
            return {"found": True, "answer": "Ann lives in Leeds."}
        return {"found": False, "answer": ""}

    memory = _memory(scripted, script, embedder)
    ops = memory.ingest(_session("h:S1", S1))  # steps 0 and 1
    (b,) = memory.bookmarks.values()
    assert [o.op for o in ops] == ["ADD"] and b.answer == "Ann lives in Leeds." and b.position == 0
    assert b.item().turn_ids == ["h:S1#t0", "h:S1#t1"]  # step 1 did not ask: the bookmark was not touched
    ops = memory.ingest(_session("h:S2", S2, date="9 May 2023"))  # step 2 asks again: reads steps 2, then 1
    assert [o.op for o in ops] == ["UPDATE"] and ops[0].target_id == b.id and len(memory) == 1
    assert b.answer == "Ann lives in York." and b.position == 2 and b.session_id == "h:S2"
    state_calls = [e for e in memory.log.entries if e["call"] == "bookmarks/state"]
    assert [re.search(r"\(step (\d+),", e["messages"][1]["content"]).group(1) for e in state_calls] == ["0", "2", "1"]
    item = b.item()
    assert item.text == "Where does Ann live?\nAnn lives in York." and item.session_id == "h:S2"
    assert item.turn_ids == ["h:S1#t0", "h:S1#t1", "h:S1#t2", "h:S1#t3"]  # where it was asked + what set the answer
    assert item.metadata["position"] == 2 and item.metadata["tag"] == "state"
    assert item.metadata["sessions"] == ["h:S1", "h:S2"]
    assert memory.retrieve("Which city is Ann's home?", 1)[0].item.id == b.id


def test_concept_bookmarks_collect_keyword_spans_without_model_calls(scripted, embedder):
    what = ("concept", "What is Max like?", ("Max",))

    def script(call, req):
        return _ask(s0=[what], s2=[("concept", "What is Max like?", ("dog",))])(req)

    memory = _memory(scripted, script, embedder)
    memory.ingest(_session("h:S1", ["I adopted a dog named Max. He is shy.", "Aww.",
                                    "Max chewed my shoes!", "Oh no, maximum chaos."]))
    memory.ingest(_session("h:S2", ["We walked to the lake with the dog.", "Nice."]))
    assert {e["call"] for e in memory.log.entries} == {"bookmarks/propose"}  # concepts sync in plain code
    (b,) = memory.bookmarks.values()
    assert b.keywords == ["Max", "dog"] and b.position == 2
    assert (
        b.answer
        == "Ann: I adopted a dog named Max. | Ann: Max chewed my shoes! | Ann: We walked to the lake with the dog."
    )
    assert b.item().turn_ids == ["h:S1#t0", "h:S1#t1", "h:S1#t2", "h:S2#t0"]


def test_behavioral_bookmarks_filter_each_action_and_new_ones_read_recent_steps_only(scripted, embedder):
    react = ("behavioral", "How does Bo react to Ann's news?", ())
    surprise = ("behavioral", "How does Ann deal with surprises?", ())

    def script(call, request):
        if call == "bookmarks/propose":
            return _ask(s0=[react], s1=[react], s3=[surprise])(request)
        return {"actions": ["A2"]}  # every piece: Bo's line

    memory = _memory(scripted, script, embedder, max_sync_steps=2)
    memory.ingest(_session("h:S1", ["Big news: I got the job!", "Wow, congratulations!",
                                    "And I am moving to York.", "I will miss you.",
                                    "Surprise party tonight!", "I had no idea!", "Cake?", "Yes please."]))
    calls = [(e["call"], _step_of(e)) for e in memory.log.entries]
    assert calls == [("bookmarks/propose", 0), ("bookmarks/behavioral", 0), ("bookmarks/propose", 1),
                     ("bookmarks/behavioral", 1), ("bookmarks/propose", 2), ("bookmarks/propose", 3),
                     ("bookmarks/behavioral", 2), ("bookmarks/behavioral", 3)]  # capped at the 2 newest steps
    bo, ann = memory.bookmarks.values()
    assert bo.answer == "Bo: Wow, congratulations! | Bo: I will miss you." and bo.position == 1
    assert bo.item().turn_ids == ["h:S1#t0", "h:S1#t1", "h:S1#t3"]
    assert ann.answer == "Bo: I had no idea! | Bo: Yes please." and ann.position == 3
    shown = memory.log.entries[1]["messages"][1]["content"]  # the filter shows numbered lines
    assert "A1: Ann: Big news: I got the job!" in shown and "A2: Bo: Wow, congratulations!" in shown


def _step_of(entry) -> int:
    return int(re.search(r"\(step (\d+),", entry["messages"][1]["content"]).group(1))


def test_proposals_are_grounded_on_profile_and_recent_bookmarks(scripted, embedder):
    def script(call, request):
        if call == "bookmarks/propose":
            return _ask(s0=[WHERE, ("concept", "Who is Bo?", ("Bo",))], s1=[WHERE])(request)
        return {"found": True, "answer": "Ann lives in Leeds."}

    memory = _memory(scripted, script, embedder, recent_bookmarks=1)
    memory.ingest(_session("h:S1", S1), Persona(id="p", name="Ann", description="a nurse from Leeds"))
    first, second = [e for e in memory.log.entries if e["call"] == "bookmarks/propose"]
    assert "a nurse from Leeds" in first["messages"][1]["content"] and first["memory_state"] == {"bookmarks": []}
    # both bookmarks were updated at step 0; only the most recent one is shown (older first on ties)
    assert [b["query"] for b in second["memory_state"]["bookmarks"]] == ["Where does Ann live?"]
    assert "- [state] Where does Ann live? -> Ann lives in Leeds." in second["messages"][1]["content"]


def test_invalid_answers_are_recorded_and_the_build_goes_on(scripted, embedder):
    def script(call, request):
        step = _step(request) if call != "bookmarks/match" else -1
        if call == "bookmarks/propose" and step == 0:
            return "garbage"
        if call == "bookmarks/propose":
            return {"questions": [{"tag": "state", "query": q, "keywords": []} for q in
                                  (["Where does Ann live?", "where does Ann live"] if step == 1 else
                                   ["In which city does Ann live these days?"])]}
        if call == "bookmarks/match":
            return {"same": "perhaps"}  # not a boolean: a failed call, the question starts a new bookmark
        return {"found": True, "answer": ""}  # schema-valid, but found without an answer

    memory = _memory(scripted, script, embedder)
    memory.ingest(_session("h:S1", S1 + S2))
    stats = memory.log.stats()
    assert stats["calls.bookmarks/propose"] == 3 and stats["failures"] == 2  # propose at step 0, the match check
    assert memory.log.entries[0]["raw_output"] == "garbage" and memory.log.entries[0]["parsed"] is None
    # the repeated question; then "found" without an answer for every step each new bookmark reads (2 + 3)
    assert stats["match_undecided"] == 1 and stats["op_errors"] == 1 + 2 + 3
    assert sorted(b.query for b in memory.bookmarks.values()) == ["In which city does Ann live these days?",
                                                                  "Where does Ann live?"]
    assert all(b.answer == "" and b.item().text.endswith("(not known yet)") for b in memory.bookmarks.values())


def test_snapshot_restore_round_trip_continues_identically(scripted, embedder):
    def script(call, request):
        if call == "bookmarks/propose":
            return _ask(s0=[WHERE, ("concept", "Who is York?", ("York",))], s2=[WHERE],
                        s3=[("behavioral", "How does Bo answer?", ())])(request)
        if call == "bookmarks/behavioral":
            return {"actions": ["A2"]}
        return {"found": "York" in request.messages[1].content, "answer": "Ann lives in York."}

    memory = _memory(scripted, script, embedder)
    memory.ingest(_session("h:S1", S1), Persona(id="p", name="Ann"))
    state = json.loads(json.dumps(memory.snapshot()))
    again = _memory(scripted, script, embedder)
    again.restore(state)
    assert again.snapshot()["bookmarks"] == state["bookmarks"] and again.steps == memory.steps
    assert [i.model_dump() for i in again.memory_items()] == [i.model_dump() for i in memory.memory_items()]
    for m in (memory, again):  # the restored memory continues exactly like the original
        m.ingest(_session("h:S2", S2 + S1, date="9 May 2023"))
    assert [i.model_dump() for i in again.memory_items()] == [i.model_dump() for i in memory.memory_items()]
    assert len(memory) == 3 and again.profile == memory.profile == "Ann"
    query = "Where is Ann's home?"
    assert [r.item.id for r in again.retrieve(query, 3)] == [r.item.id for r in memory.retrieve(query, 3)]
    try:
        again.restore({"name": "hema"})
    except ValueError as err:
        assert "bookmarks" in str(err)
    else:
        raise AssertionError("a snapshot of another framework must be refused")


def test_reads_a_bookmarks_action_series_as_a_story(scripted, embedder, data_root):
    """The BOOKMARKS data (title -> [{action, character}]) read as one session of actions."""
    series = json.loads((data_root / "bookmarks" / "title2action_series.haruhi.json").read_text())
    title, actions = next(iter(series.items()))
    actions = actions[:30]
    session = Session(id=f"haruhi:{title}", turns=[
        Turn(id=f"haruhi:{title}#a{i}", speaker=a["character"], text=a["action"], index=i)
        for i, a in enumerate(actions)])
    ask = ("concept", "What does the story say about Haruhi?", ("Haruhi",))
    memory = _memory(scripted, lambda call, req: _ask(s0=[ask], s2=[ask])(req), embedder, chunk_turns=10,
                     answer_chars=5000)
    memory.ingest(session, Persona(id="kyon", name="Kyon"))
    (b,) = memory.bookmarks.values()
    mentioning = [t for t in session.turns if re.search(r"(?<!\w)haruhi(?!\w)", t.text, re.IGNORECASE)]
    assert mentioning and b.position == 2
    assert [e[0] for e in b.entries] == [t.id for t in mentioning]
    assert set(b.item().turn_ids) <= {t.id for t in session.turns}
    assert memory.retrieve("Haruhi", 1)[0].item.id == b.id
