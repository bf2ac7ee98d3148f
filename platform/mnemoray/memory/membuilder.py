"""MemBuilder: a core block plus episodic, semantic and procedural stores, built per session.

For each session four agents (core, episodic, semantic, procedural) read the transcript;
they run concurrently as one batched engine call, each seeing the core block and the 20
existing entries of its own type most similar to the session. Their JSON ops are applied
by `mnemoray.memory.ops`: UPDATE and MERGE replace what they name, so no stale copies are
left. When the core block outgrows its limit (default 5000 chars) the LLM compresses it;
if that fails, whole lines are kept up to the limit and the event is counted.
"""

from __future__ import annotations

from typing import Any

from mnemoray.config import MemoryConfig
from mnemoray.memory.base import MemoryFramework
from mnemoray.memory.llm_calls import CallSpec, EmbeddingRetrieval, LLMMemoryFramework
from mnemoray.memory.ops import (
    CoreBlock,
    CoreOp,
    ItemStore,
    Provenance,
    apply_store_ops,
    fit_core,
    parse_core_ops,
    parse_store_ops,
)
from mnemoray.memory.prompts import fit, load_prompt
from mnemoray.memory.ranking import rank_items
from mnemoray.memory.trajectory import TrajectoryLog
from mnemoray.memory.transcript import spoken_turns, transcript
from mnemoray.records import MemoryItem, MemoryOp, Persona, Session

# store -> (handle letter shown to the model, allowed actions)
STORES: dict[str, tuple[str, tuple[str, ...]]] = {
    "episodic": ("E", ("ADD", "UPDATE", "MERGE")),
    "semantic": ("S", ("ADD", "UPDATE", "SKIP")),
    "procedural": ("P", ("ADD", "UPDATE")),
}


class MemBuilderMemory(EmbeddingRetrieval, LLMMemoryFramework, MemoryFramework):
    name = "membuilder"

    def __init__(self, config: MemoryConfig, engine=None, embedder=None, log: TrajectoryLog | None = None,
                 max_retries: int = 2):
        super().__init__(config, engine, embedder, log, max_retries)
        self.cache = self.embedding_cache()
        self.core = CoreBlock()
        self.stores = {kind: ItemStore(kind) for kind in STORES}

    def __len__(self) -> int:
        return (1 if self.core.text else 0) + sum(len(s) for s in self.stores.values())

    def memory_items(self) -> list[MemoryItem]:
        core = [self.core.item()] if self.core.text else []
        return core + [it for kind in STORES for it in self.stores[kind].values()]

    # -- building --------------------------------------------------------------------------------

    def _context(self, kind: str, session_text: str) -> tuple[dict[str, str], list[dict[str, str]]]:
        """Handles for the existing entries of `kind` most related to the session (oldest first)."""
        items = self.stores[kind].values()
        ranked = rank_items(self.cache, [session_text], items, self.settings.context_items)[0]
        chosen = sorted(i for i, _ in ranked)
        letter = STORES[kind][0]
        rows = [{"handle": f"{letter}{n}", "id": items[i].id, "text": items[i].text}
                for n, i in enumerate(chosen, start=1)]
        return {r["handle"]: r["id"] for r in rows}, rows

    def ingest(self, session: Session, persona: Persona | None = None) -> list[MemoryOp]:
        turns = spoken_turns(session)
        if not turns:
            return []
        prov = Provenance(session.id, tuple(t.id for t in turns), session.timestamp)
        text = transcript(turns)
        shown = fit(text, self.settings.session_chars)
        date = session.timestamp or "unknown"
        core_text = self.core.text or "(empty)"
        specs = [CallSpec(load_prompt("membuilder", "core"),
                          {"date": date, "core": core_text, "core_chars": len(self.core.text),
                           "core_limit": self.settings.core_limit, "session": shown},
                          session.id, {"core": self.core.text})]
        handles: dict[str, dict[str, str]] = {}
        for kind in STORES:
            handles[kind], rows = self._context(kind, text)
            entries = "\n".join(f"{r['handle']}: {r['text']}" for r in rows) or "(none yet)"
            entries = fit(entries, self.config.llm_call.prompt_memory_chars)
            specs.append(CallSpec(load_prompt("membuilder", kind),
                                  {"date": date, "core": fit(core_text, 2000), "kind": kind, "entries": entries,
                                   "session": shown},
                                  session.id, {"core": self.core.text, "entries": rows},
                                  id_fields={"ids": list(handles[kind])}))
        core_out, *store_outs = self.model.run(specs)  # the four agents: one batched call
        ops: list[MemoryOp] = []
        if core_out.ok:
            parsed, errors = parse_core_ops(core_out.parsed)
            done, more = self.core.apply(parsed, prov)
            ops.extend(done)
            self._note_errors(session.id, "core", errors + more)
        for kind, out in zip(STORES, store_outs):
            if not out.ok:
                continue
            parsed, errors = parse_store_ops(out.parsed, STORES[kind][1], handles[kind])
            done, more = apply_store_ops(self.stores[kind], parsed, prov)
            ops.extend(done)
            self._note_errors(session.id, kind, errors + more)
        if len(self.core.text) > self.settings.core_limit:
            ops.extend(self._compress(prov))
        return ops

    def _compress(self, prov: Provenance) -> list[MemoryOp]:
        limit = self.settings.core_limit
        spec = CallSpec(load_prompt("membuilder", "compress"),
                        {"core": self.core.text, "core_chars": len(self.core.text), "core_limit": limit},
                        prov.session_id, {"core": self.core.text}, max_chars=limit)
        out = self.model.run([spec])[0]
        text = out.parsed.get("text", "") if out.ok and isinstance(out.parsed, dict) else ""
        if isinstance(text, str) and text.strip() and len(text.strip()) <= limit:
            self.log.note("core_compressed")
            done, _ = self.core.apply([CoreOp("REWRITE", text.strip())], prov)
        else:
            self.log.note("core_truncated")
            done, _ = self.core.apply([CoreOp("REWRITE", fit_core(self.core.text, limit))], prov)
        return [op.model_copy(update={"reason": "core compression"}) for op in done]

    # -- state -----------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {"name": self.name, "config": self.config.model_dump(mode="json"), "core": self.core.state(),
                "stores": {k: [it.model_dump(mode="json") for it in s.values()] for k, s in self.stores.items()},
                "op_errors": list(self.op_errors), "stats": self.log.stats()}

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"snapshot is of '{state.get('name')}', not '{self.name}'")
        self.core = CoreBlock.from_state(state["core"])
        self.stores = {k: ItemStore(k, [MemoryItem.model_validate(x) for x in state["stores"].get(k, [])])
                       for k in STORES}
        self.op_errors = list(state.get("op_errors", []))
