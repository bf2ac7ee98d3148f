"""Fuzzed op JSON never crashes a parser: it yields well-formed ops or typed OpErrors."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnemoray.memory.dualmem import apply_extraction, parse_extraction
from mnemoray.memory.ops import (CoreBlock, ItemStore, OpError, Provenance, StoreOp, apply_store_ops, parse_core_ops,
                                 parse_store_ops)
from mnemoray.llm.structured import ParseError, SchemaError, parse_and_validate
from mnemoray.memory.prompts import load_prompt

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
actions = st.sampled_from(["ADD", "UPDATE", "MERGE", "SKIP", "APPEND", "REPLACE", "REWRITE", "add", "DELETE", ""])
op_like = st.fixed_dictionaries({}, optional={
    "action": actions | json_values, "ids": st.lists(st.sampled_from(["E1", "E2", "S1", "X"]), max_size=3) | json_values,
    "text": st.text(max_size=30) | json_values, "old": st.text(max_size=10) | json_values,
    "refs": st.lists(st.sampled_from(["F1", "N1", "N2", "Z"]), max_size=3) | json_values,
})
answers = json_values | st.fixed_dictionaries({"operations": st.lists(op_like | json_values, max_size=5)}) | \
    st.fixed_dictionaries({"facts": st.lists(st.text(max_size=20) | json_values, max_size=4),
                           "insights": st.lists(op_like | json_values, max_size=3)})
PROV = Provenance("h:S1", ("D1:1",), None)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answers)
def test_store_and_core_parsers_yield_ops_or_typed_errors(value):
    store = ItemStore("episodic")
    existing = store.add("an existing entry", PROV).item.id
    ops, errors = parse_store_ops(value, ["ADD", "UPDATE", "MERGE", "SKIP"], {"E1": existing})
    assert all(isinstance(o, StoreOp) for o in ops) and all(isinstance(e, OpError) for e in errors)
    done, more = apply_store_ops(store, ops, PROV)
    assert all(isinstance(e, OpError) for e in more)
    assert len(done) + len(more) == len(ops)
    core_ops, core_errors = parse_core_ops(value)
    assert all(isinstance(e, OpError) for e in core_errors)
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
    assert all(isinstance(e, OpError) for e in errors)
