"""Op semantics on hand-written op sequences: replacement, provenance, core block rules."""

from __future__ import annotations

from mnemoray.memory.ops import (
    CoreBlock,
    CoreOp,
    ItemStore,
    OpError,
    Provenance,
    apply_store_ops,
    fit_core,
    normalize_text,
    parse_core_ops,
    parse_store_ops,
)

S1 = Provenance("h:S1", ("D1:1", "D1:2"), "1 May 2023")
S2 = Provenance("h:S2", ("D2:5",), "8 May 2023")


def _store_with(*texts: str) -> tuple[ItemStore, list[str]]:
    store = ItemStore("episodic")
    ids = [store.add(t, S1).item.id for t in texts]
    return store, ids


def test_update_replaces_the_named_item_and_keeps_provenance():
    store, (a, b) = _store_with("2023-05-01: joined a choir", "2023-05-01: bought a dog")
    ops, errors = parse_store_ops(
        {"operations": [{"action": "UPDATE", "ids": ["E1"], "text": "2023-05-01: joined the city choir | alto"}]},
        ["ADD", "UPDATE", "MERGE"],
        {"E1": a, "E2": b},
    )
    done, more = apply_store_ops(store, ops, S2)
    assert errors == [] and more == []
    texts = [it.text for it in store.values()]
    assert "2023-05-01: joined a choir" not in texts  # no stale copy
    assert len(store) == 2
    new = done[0].item
    assert done[0].op == "UPDATE" and done[0].target_id == a and a not in store
    assert new.session_id == "h:S2"
    assert new.turn_ids == ["D1:1", "D1:2", "D2:5"]
    assert new.metadata["sessions"] == ["h:S1", "h:S2"]


def test_merge_replaces_all_named_items_with_one():
    store, (a, b, c) = _store_with("ran 5k on sunday", "ran a 5k race", "adopted a cat")
    ops, errors = parse_store_ops(
        {"operations": [{"action": "MERGE", "ids": ["E1", "E2"], "text": "ran a 5k race on sunday"}]},
        ["ADD", "UPDATE", "MERGE"],
        {"E1": a, "E2": b, "E3": c},
    )
    done, more = apply_store_ops(store, ops, S2)
    assert not errors and not more
    assert a not in store and b not in store and c in store
    assert [it.text for it in store.values()] == ["adopted a cat", "ran a 5k race on sunday"]
    assert done[0].item.turn_ids == ["D1:1", "D1:2", "D2:5"]


def test_op_on_an_item_an_earlier_op_replaced_fails_alone():
    store, (a, b) = _store_with("x happened", "y happened")
    ops, _ = parse_store_ops({"operations": [
        {"action": "UPDATE", "ids": ["E1"], "text": "x happened twice"},
        {"action": "MERGE", "ids": ["E1", "E2"], "text": "x and y"},
        {"action": "ADD", "ids": [], "text": "z happened"},
    ]}, ["ADD", "UPDATE", "MERGE"], {"E1": a, "E2": b})
    done, errors = apply_store_ops(store, ops, S2)
    assert [d.op for d in done] == ["UPDATE", "ADD"]
    assert len(errors) == 1 and errors[0].index == 1 and isinstance(errors[0], OpError)
    assert sorted(it.text for it in store.values()) == ["x happened twice", "y happened", "z happened"]


def test_parser_rejects_bad_ops_with_reasons():
    handles = {"S1": "id-1", "S2": "id-2"}
    ops, errors = parse_store_ops({"operations": [
        {"action": "MERGE", "ids": ["S1", "S2"], "text": "both"},  # not allowed for semantic
        {"action": "update", "ids": ["S9"], "text": "?"},  # unknown handle
        {"action": "UPDATE", "ids": ["S1", "S2"], "text": "two"},  # UPDATE names one
        {"action": "ADD", "ids": [], "text": "  "},  # empty
        "not an object",
        {"action": "SKIP", "ids": ["S1"], "text": ""},
        {"action": "add", "text": "Rust - language: the user's favourite"},
    ]}, ["ADD", "UPDATE", "SKIP"], handles)
    assert [o.action for o in ops] == ["SKIP", "ADD"]
    assert [e.index for e in errors] == [0, 1, 2, 3, 4]
    assert parse_store_ops([1, 2], ["ADD"], {})[0] == []
    assert len(parse_store_ops({"ops": []}, ["ADD"], {})[1]) == 1


def test_add_of_the_same_text_widens_provenance_instead_of_duplicating():
    store = ItemStore("semantic")
    first = store.add("Rust - language: favourite", S1)
    again = store.add("  rust — Language: FAVOURITE! ", S2)
    assert again.op == "DEDUP" and again.target_id == first.item.id and len(store) == 1
    assert store.values()[0].turn_ids == ["D1:1", "D1:2", "D2:5"]
    assert normalize_text("Hello,   World!") == "hello world"


def test_ids_are_deterministic():
    a, _ = _store_with("one", "two")
    b, _ = _store_with("one", "two")
    assert [it.id for it in a.values()] == [it.id for it in b.values()]


def test_core_block_ops_and_provenance():
    core = CoreBlock()
    ops, errors = parse_core_ops({"operations": [
        {"action": "APPEND", "old": "", "text": "Name: Sarah."},
        {"action": "APPEND", "old": "", "text": "Job: engineer."},
        {"action": "REPLACE", "old": "", "text": "x"},  # no passage named
        {"action": "SHOUT", "old": "", "text": "x"},
    ]})
    assert [e.index for e in errors] == [2, 3]
    core.apply(ops, S1)
    assert core.text == "Name: Sarah.\nJob: engineer."
    done, errors = core.apply(
        [CoreOp("REPLACE", "Job: teacher.", "Job: engineer."), CoreOp("REPLACE", "a", "missing")], S2
    )
    assert core.text == "Name: Sarah.\nJob: teacher." and len(done) == 1 and len(errors) == 1
    assert core.item().turn_ids == ["D1:1", "D1:2", "D2:5"] and core.item().session_id == "h:S2"
    core.apply([CoreOp("REWRITE", "Sarah, teacher.")], S2)
    assert core.text == "Sarah, teacher."
    assert CoreBlock.from_state(core.state()) == core


def test_fit_core_keeps_whole_lines_within_the_limit():
    text = "\n".join(f"line {i} " + "x" * 20 for i in range(10))
    cut = fit_core(text, 100)
    assert len(cut) <= 100 and cut.splitlines() == text.splitlines()[: len(cut.splitlines())]
    assert fit_core("short", 100) == "short"
    assert len(fit_core("y" * 500, 100)) == 100
