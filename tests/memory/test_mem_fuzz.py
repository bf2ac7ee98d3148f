"""Fuzzed op JSON never crashes a parser: it yields well-formed ops or typed OpErrors."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnemoray.llm.structured import ParseError, SchemaError, parse_and_validate
from mnemoray.memory.dualmem import apply_extraction, parse_extraction
from mnemoray.memory.ops import (
    CoreBlock,
    ItemStore,
    OpError,
    Provenance,
    StoreOp,
    apply_store_ops,
    parse_core_ops,
    parse_store_ops,
)
from mnemoray.memory.prompts import load_prompt

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
actions = st.sampled_from(["ADD", "UPDATE", "MERGE", "SKIP", "APPEND", "REPLACE", "REWRITE", "add", "DELETE", ""])
op_like = st.fixed_dictionaries(
    {},
    optional={
        "action": actions | json_values,
        "ids": st.lists(st.sampled_from(["E1", "E2", "S1", "X"]), max_size=3) | json_values,
        "text": st.text(max_size=30) | json_values,
        "old": st.text(max_size=10) | json_values,
        "refs": st.lists(st.sampled_from(["F1", "N1", "N2", "Z"]), max_size=3) | json_values,
    },
)
answers = json_values | st.fixed_dictionaries({"operations": st.lists(op_like | json_values, max_size=5)}) | \
    st.fixed_dictionaries({"facts": st.lists(st.text(max_size=20) | json_values, max_size=4),
                           "insights": st.lists(op_like | json_values, max_size=3)})
PROV = Provenance("h:S1", ("D1:1",), None)


def assert_each_entry_accounted(value, key: str, kept: list, errors: list, folds: bool = False) -> None:
    """Every entry of `value[key]` became a kept item or one error naming its index (`folds`:
    repeats may merge into one kept item); an answer without that list is one error, nothing kept."""
    assert all(isinstance(e, OpError) for e in errors)
    raw = value.get(key) if isinstance(value, dict) else None
    if isinstance(raw, str) and key == "actions":
        raw = [raw]
    if not isinstance(raw, list):
        assert not kept and len(errors) == 1 and errors[0].index is None, (value, errors)
        return
    indexes = [e.index for e in errors]
    assert len(set(indexes)) == len(indexes) and all(i is not None and 0 <= i < len(raw) for i in indexes)
    if folds:
        assert len(kept) + len(errors) <= len(raw) and (len(kept) > 0 or len(errors) == len(raw))
    else:
        assert len(kept) + len(errors) == len(raw), (value, kept, errors)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answers)
def test_store_and_core_parsers_yield_ops_or_typed_errors(value):
    store = ItemStore("episodic")
    existing = store.add("an existing entry", PROV).item.id
    ops, errors = parse_store_ops(value, ["ADD", "UPDATE", "MERGE", "SKIP"], {"E1": existing})
    assert all(isinstance(o, StoreOp) for o in ops)
    assert_each_entry_accounted(value, "operations", ops, errors)
    done, more = apply_store_ops(store, ops, PROV)
    assert all(isinstance(e, OpError) for e in more)
    assert len(done) + len(more) == len(ops)
    core_ops, core_errors = parse_core_ops(value)
    assert_each_entry_accounted(value, "operations", core_ops, core_errors)
    CoreBlock().apply(core_ops, PROV)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answers)
def test_dualmem_extraction_never_crashes(value):
    facts, insights = ItemStore("fact"), ItemStore("insight")
    f1 = facts.add("Caroline went to a support group", PROV).item.id
    parse_extraction(value)
    ops, errors = apply_extraction(facts, insights, value, PROV, {"F1": f1}, lambda text, cands: None)
    assert all(isinstance(e, OpError) for e in errors)
    for ins in insights.values():  # every stored insight cites ≥ 2 facts that exist
        assert len(ins.metadata["refs"]) >= 2 and all(r in facts for r in ins.metadata["refs"])


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80) | json_values.map(json.dumps))
def test_raw_text_through_the_structured_parser_gives_value_or_typed_error(text):
    schema = load_prompt("membuilder", "episodic").schema
    try:
        value = parse_and_validate(text, schema)
    except (ParseError, SchemaError):
        return
    ops, errors = parse_store_ops(value, ["ADD", "UPDATE", "MERGE"], {})
    assert_each_entry_accounted(value, "operations", ops, errors)


# ---- RealMem, HEMA, BOOKMARKS parsers --------------------------------------------------------

point_like = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["Dynamic", "static", "Schedule", "Weekly", ""]) | json_values,
    "tag": st.sampled_from(["Confirmed", "draft", "Maybe"]) | json_values,
    "content": st.text(max_size=30) | json_values,
    "turns": st.lists(st.sampled_from(["T1", "t2", "T9", ""]), max_size=3) | json_values,
})
decision_like = st.fixed_dictionaries({}, optional={
    "point": st.sampled_from(["N1", "n2", "N3", "E1", ""]) | json_values,
    "action": st.sampled_from(["keep", "DISCARD", "merge", "delete"]) | json_values,
    "target": st.sampled_from(["E1", "e2", "E7", ""]) | json_values,
    "content": st.text(max_size=30) | json_values,
})
question_like = st.fixed_dictionaries({}, optional={
    "tag": st.sampled_from(["concept", "State", "behavioral", "mood"]) | json_values,
    "query": st.text(max_size=30) | json_values,
    "keywords": st.lists(st.text(max_size=8), max_size=3) | json_values,
})
new_answers = (
    json_values
    | st.fixed_dictionaries({"points": st.lists(point_like | json_values, max_size=5)})
    | st.fixed_dictionaries({"decisions": st.lists(decision_like | json_values, max_size=5)})
    | st.fixed_dictionaries({"questions": st.lists(question_like | json_values, max_size=5)})
    | st.fixed_dictionaries(
        {},
        optional={
            "found": st.booleans() | json_values,
            "answer": st.text(max_size=10) | json_values,
            "same": st.booleans() | json_values,
            "summary": st.text(max_size=10) | json_values,
            "actions": st.lists(st.sampled_from(["A1", "a2", "A9"]), max_size=3) | json_values,
        },
    )
)


mostly_valid_decision = st.fixed_dictionaries({
    "point": st.sampled_from(["N1", "N2", "N3", "n1", "X"]),
    "action": st.sampled_from(["keep", "discard", "merge", "MERGE", "drop"]),
    "target": st.sampled_from(["E1", "E2", "e1", "", "E9"]),
    "content": st.text(max_size=20),
})
dedup_answers = new_answers | st.fixed_dictionaries(
    {"decisions": st.lists(mostly_valid_decision | decision_like | json_values, max_size=6)})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(new_answers, dedup_answers)
def test_realmem_points_and_dedup_never_crash_and_merges_leave_no_stale_copy(points_value, decisions_value):
    from mnemoray.memory.realmem import MemoryPoint, Pending, PointStore, apply_decision, parse_dedup, parse_points

    points, errors = parse_points(points_value)
    assert all(isinstance(p, MemoryPoint) and p.content.strip() for p in points)
    assert_each_entry_accounted(points_value, "points", points, errors)
    store = PointStore()
    e1 = store.keep(Pending(MemoryPoint("Static", "Confirmed", "Ann likes tea."), PROV), None).item.id
    e2 = store.keep(Pending(MemoryPoint("Dynamic", "Confirmed", "Ann moved to York."), PROV), None).item.id
    names = ["N1", "N2", "N3"]
    decisions, errors = parse_dedup(decisions_value, names, ["E1", "E2"])
    assert set(decisions) <= set(names) and all(isinstance(e, OpError) for e in errors)
    raw = decisions_value.get("decisions") if isinstance(decisions_value, dict) else None
    assert len(decisions) + len(errors) <= (len(raw) if isinstance(raw, list) else 1)  # one outcome per entry at most
    news = [
        Pending(MemoryPoint("Static", "Confirmed", f"new point {n}"), Provenance("h:S2", (n,), None)) for n in names
    ]
    handles = {"E1": e1, "E2": e2}
    replaced = set()
    for name, pending in zip(names, news):
        decision = decisions.get(name)
        target = store.resolve(handles[decision.target]) if decision and decision.target else None
        try:
            op = apply_decision(store, pending, decision, handles, None)
        except OpError:
            continue
        if op.op == "MERGE":
            replaced.add(target)
    assert not replaced & set(store.items)  # a merged point is gone, not kept beside its replacement
    assert len(store) <= 2 + len(names)
    for item in store.values():
        assert item.turn_ids and item.metadata["sessions"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(new_answers)
def test_bookmarks_and_hema_parsers_yield_values_or_typed_errors(value):
    from mnemoray.memory.bookmarks import BOOKMARK_TAGS, parse_actions, parse_questions, parse_same, parse_state
    from mnemoray.memory.hema import parse_summary

    questions, errors = parse_questions(value)
    assert all(q.tag in BOOKMARK_TAGS and q.query.strip() for q in questions)
    assert_each_entry_accounted(value, "questions", questions, errors, folds=True)
    same, error = parse_same(value)
    assert (same is None) == (error is not None) and same in (None, True, False)
    answer, error = parse_state(value)
    assert answer is None or (isinstance(answer, str) and answer and error is None)
    assert error is None or isinstance(error, OpError)
    picked, errors = parse_actions(value, ["A1", "A2"])
    assert set(picked) <= {"A1", "A2"}
    assert_each_entry_accounted(value, "actions", picked, errors, folds=True)
    text, error = parse_summary(value, 20)
    assert (text is None) == (error is not None) and (text is None or 0 < len(text) <= 20)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80) | new_answers.map(json.dumps))
def test_raw_text_through_the_new_schemas_gives_value_or_typed_error(text):
    from mnemoray.memory.bookmarks import parse_questions
    from mnemoray.memory.realmem import parse_points

    cases = (("realmem", "extract", parse_points, "points", False),
             ("bookmarks", "propose", parse_questions, "questions", True))
    for framework, name, parser, key, folds in cases:
        try:
            value = parse_and_validate(text, load_prompt(framework, name).schema)
        except (ParseError, SchemaError):
            continue
        kept, errors = parser(value)
        assert_each_entry_accounted(value, key, kept, errors, folds=folds)
