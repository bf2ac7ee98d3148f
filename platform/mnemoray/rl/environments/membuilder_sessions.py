"""What the dense-QA reward needs per MemBuilder session, rebuilt from a `memory build` trajectory log.

The log keeps, per agent call, only what that call saw (the core block and up to 20
entries of its store). The reward needs the WHOLE memory before the session, so this
module replays the expert's logged ops session by session with `mnemoray.memory.ops`
(the same appliers the framework used; item ids are content hashes, so the replay gives
the ids the handles in the log point to):

- core before a session: the core text the session's core call saw (exact; it already
  reflects compression), else the replayed block;
- each store: the expert's ops of earlier sessions applied in log order, handles
  resolved through the entries the call was shown (`memory_state.entries`).

For each session it also keeps the session date and transcript (read back from the core
agent's prompt, the text every agent was shown), each agent's expert answer and handle map
(the other three agents' ops complete the memory a rollout is scored on).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mnemoray.memory.membuilder import STORES
from mnemoray.memory.ops import (
    CoreBlock,
    CoreOp,
    ItemStore,
    Provenance,
    apply_store_ops,
    parse_core_ops,
    parse_store_ops,
)

AGENTS = ("core", *STORES)


@dataclass
class SessionRecord:
    history_id: str
    session_id: str
    date: str | None  # the session date shown to the agents (None when unknown)
    text: str  # the session transcript the agents were shown
    state_before: dict[str, Any]  # {"core": text, "stores": {kind: [MemoryItem JSON, oldest first]}}
    expert: dict[str, Any] = field(default_factory=dict)  # agent -> the expert's parsed answer
    handles: dict[str, dict[str, str]] = field(default_factory=dict)  # store agent -> {handle: item id}

    @property
    def key(self) -> str:
        return f"{self.history_id}/{self.session_id}"


def session_of_prompt(user_message: str) -> tuple[str | None, str]:
    """(date, transcript) from a MemBuilder agent's user message ("Session date: ..." first,
    the transcript between "Session:" and the closing "Reply as" line); the whole message
    when those markers are missing."""
    date = None
    first, _, _ = user_message.partition("\n")
    if first.startswith("Session date:"):
        value = first.removeprefix("Session date:").strip()
        date = None if value in ("", "unknown") else value
    _, marker, body = user_message.rpartition("\nSession:\n")
    if not marker:
        return date, user_message.strip()
    text, _, _ = body.rpartition("\n\nReply as")
    return date, (text or body).strip()


def handles_of(memory_state: Any) -> dict[str, str]:
    entries = memory_state.get("entries") if isinstance(memory_state, Mapping) else None
    return {str(e["handle"]): str(e["id"]) for e in entries or [] if isinstance(e, Mapping)
            and "handle" in e and "id" in e}


def snapshot(core: CoreBlock, stores: Mapping[str, ItemStore]) -> dict[str, Any]:
    return {"core": core.text, "stores": {k: [it.model_dump(mode="json") for it in s.values()]
                                          for k, s in stores.items()}}


def apply_agent(core: CoreBlock, stores: Mapping[str, ItemStore], agent: str, answer: Any,
                handles: Mapping[str, str], prov: Provenance) -> list[str]:
    """Apply one agent's answer to the memory (in place); the op errors as text. An answer
    without an "operations" list is one error and changes nothing."""
    if agent == "core":
        ops, errors = parse_core_ops(answer)
        _, more = core.apply(ops, prov)
    else:
        store_ops, errors = parse_store_ops(answer, STORES[agent][1], handles)
        _, more = apply_store_ops(stores[agent], store_ops, prov)
    return [str(e) for e in errors + more]


def session_records(calls: Iterable[Mapping[str, Any]]) -> list[SessionRecord]:
    """One record per (history, session) with MemBuilder agent calls, in log order.

    `calls` are trajectory-log lines (dicts). Failed agent calls change nothing (as in the
    framework); a logged compression (`membuilder/compress`) rewrites the core block.
    """
    records: dict[tuple[str, str], SessionRecord] = {}
    cores: dict[str, CoreBlock] = {}
    stores: dict[str, dict[str, ItemStore]] = {}
    by_session: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    order: list[tuple[str, str]] = []
    for call in calls:
        framework_call, _, agent = str(call.get("call", "")).partition("/")
        sid = call.get("session_id")
        if call.get("framework") != "membuilder" or framework_call != "membuilder" or sid is None:
            continue
        key = (str(call["history_id"]), str(sid))
        if key not in by_session:
            by_session[key] = []
            order.append(key)
        by_session[key].append(call)
    for key in order:
        history, sid = key
        core = cores.setdefault(history, CoreBlock())
        kinds = stores.setdefault(history, {kind: ItemStore(kind) for kind in STORES})
        session_calls = by_session[key]
        agent_calls = {c["call"].partition("/")[2]: c for c in session_calls if c["call"].partition("/")[2] in AGENTS}
        core_call = agent_calls.get("core")
        seen_core = core_call.get("memory_state", {}).get("core") if core_call else None
        if isinstance(seen_core, str):
            core.text = seen_core
        shown = next((c for c in agent_calls.values() if c.get("messages")), None)
        user = next((m["content"] for m in reversed(shown["messages"]) if m.get("role") == "user"), "") if shown \
            else ""
        date, text = session_of_prompt(user)
        record = SessionRecord(history, sid, date, text, snapshot(core, kinds))
        prov = Provenance(sid, (), date)
        for agent in AGENTS:
            call = agent_calls.get(agent)
            if call is None:
                continue
            if agent != "core":
                record.handles[agent] = handles_of(call.get("memory_state"))
            if call.get("error") is None and call.get("parsed") is not None:
                record.expert[agent] = call["parsed"]
                apply_agent(core, kinds, agent, call["parsed"], record.handles.get(agent, {}), prov)
        for call in session_calls:
            parsed = call.get("parsed")
            if call["call"] == "membuilder/compress" and isinstance(parsed, Mapping) and \
                    isinstance(parsed.get("text"), str) and parsed["text"].strip():
                core.apply([CoreOp("REWRITE", parsed["text"].strip())], prov)
        records[key] = record
    return [records[key] for key in order]


def expert_text(answer: Any) -> str:
    """The unit lengths are measured in: the answer as compact sorted JSON (as `ground_truth`)."""
    return json.dumps(answer, ensure_ascii=False, sort_keys=True)


__all__ = ["AGENTS", "SessionRecord", "apply_agent", "expert_text", "handles_of", "session_of_prompt",
           "session_records", "snapshot"]
