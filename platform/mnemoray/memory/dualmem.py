"""DualMem (RoleMemo): objective facts plus persona-conditioned insights grounded in them.

The memory model reads each session in chunks (default 12 turns) with the persona and the
current memory, and proposes new facts and insights (an insight cites ≥ 2 facts). Plain
code then dedups facts — same normalised text, or embedding cosine above the threshold
(default 0.85), means the same fact — remaps insight refs through that id map, and drops
insights left with fewer than two distinct facts. Retrieval ranks facts ∪ insights by
embedding and appends the facts cited by the retrieved insights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from mnemoray.config import MemoryConfig
from mnemoray.memory.base import MemoryFramework
from mnemoray.memory.llm_calls import CallSpec, EmbeddingRetrieval, LLMMemoryFramework
from mnemoray.memory.ops import ItemStore, OpError, Provenance, normalize_text, ordered_union, widen
from mnemoray.memory.prompts import fit, load_prompt
from mnemoray.memory.ranking import rank_items
from mnemoray.memory.trajectory import TrajectoryLog
from mnemoray.memory.transcript import chunk_turns, persona_text, transcript
from mnemoray.records import MemoryItem, MemoryOp, Persona, RetrievedItem, Session

SimilarFn = Callable[[str, Sequence[MemoryItem]], "MemoryItem | None"]


def parse_extraction(value: Any) -> tuple[list[str], list[tuple[list[str], str]], list[OpError]]:
    """`{"facts": [...], "insights": [{"refs", "text"}]}` → fact texts, (refs, text) pairs, errors."""
    if not isinstance(value, dict):
        return [], [], [OpError("the answer is not a JSON object")]
    errors: list[OpError] = []
    facts: list[str] = []
    raw_facts = value.get("facts", [])
    if not isinstance(raw_facts, list):
        errors.append(OpError("'facts' is not a list"))
        raw_facts = []
    for i, f in enumerate(raw_facts):
        text = f.get("text") if isinstance(f, dict) else f
        if isinstance(text, str) and normalize_text(text):
            facts.append(text.strip())
        else:
            errors.append(OpError("fact without text", i))
    insights: list[tuple[list[str], str]] = []
    raw_insights = value.get("insights", [])
    if not isinstance(raw_insights, list):
        errors.append(OpError("'insights' is not a list"))
        raw_insights = []
    for i, ins in enumerate(raw_insights):
        refs = ins.get("refs") if isinstance(ins, dict) else None
        text = ins.get("text") if isinstance(ins, dict) else None
        if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
            errors.append(OpError("insight 'refs' must be a list of strings", i))
        elif not isinstance(text, str) or not normalize_text(text):
            errors.append(OpError("insight without text", i))
        else:
            insights.append(([r.strip().upper() for r in refs], text.strip()))
    return facts, insights, errors


def apply_extraction(
    facts: ItemStore,
    insights: ItemStore,
    value: Any,
    prov: Provenance,
    handles: dict[str, str],
    similar: SimilarFn,
    min_refs: int = 2,
) -> tuple[list[MemoryOp], list[OpError]]:
    """Apply one chunk's answer. `handles` maps prompt handles (F1...) to fact ids; new facts are N1..."""
    new_facts, new_insights, errors = parse_extraction(value)
    ops: list[MemoryOp] = []
    id_map = dict(handles)
    for j, text in enumerate(new_facts, start=1):
        same = facts.find_text(text) or similar(text, facts.values())
        if same is not None:
            merged = widen(same, prov)
            facts.items[same.id] = merged
            id_map[f"N{j}"] = same.id
            ops.append(MemoryOp(op="DEDUP", item=merged, target_id=same.id, session_id=prov.session_id,
                                reason=f"new fact N{j} is the same fact"))
        else:
            op = facts.add(text, prov)
            id_map[f"N{j}"] = op.item.id
            ops.append(op)
    for i, (refs, text) in enumerate(new_insights):
        unknown = [r for r in refs if r not in id_map]
        resolved = ordered_union([], [id_map[r] for r in refs if r in id_map])
        resolved = [r for r in resolved if r in facts]
        if len(resolved) < min_refs:
            why = f"cites {len(resolved)} distinct known fact(s), needs {min_refs}"
            errors.append(OpError(why + (f" (unknown refs {unknown})" if unknown else ""), i))
            continue
        same = insights.find_text(text)
        if same is not None:
            merged = widen(same, prov)
            merged.metadata["refs"] = ordered_union(same.metadata.get("refs", []), resolved)
            insights.items[same.id] = merged
            ops.append(MemoryOp(op="DEDUP", item=merged, target_id=same.id, session_id=prov.session_id))
        else:
            ops.append(insights.add(text, prov, metadata={"refs": resolved}))
    return ops, errors


class DualMemMemory(EmbeddingRetrieval, LLMMemoryFramework, MemoryFramework):
    name = "dualmem"

    def __init__(self, config: MemoryConfig, engine=None, embedder=None, log: TrajectoryLog | None = None,
                 max_retries: int = 2):
        super().__init__(config, engine, embedder, log, max_retries)
        self.cache = self.embedding_cache()
        self.facts = ItemStore("fact")
        self.insights = ItemStore("insight")

    def __len__(self) -> int:
        return len(self.facts) + len(self.insights)

    def memory_items(self) -> list[MemoryItem]:
        return self.facts.values() + self.insights.values()

    # -- building --------------------------------------------------------------------------------

    def similar_fact(self, text: str, candidates: Sequence[MemoryItem]) -> MemoryItem | None:
        """The candidate fact whose embedding is closest to `text`, if above the dedup threshold."""
        ranked = rank_items(self.cache, [text], candidates, 1)[0]
        if ranked and ranked[0][1] > self.settings.dedup_threshold:
            return candidates[ranked[0][0]]
        return None

    def _shown_memory(self) -> tuple[dict[str, str], str, str, dict[str, Any]]:
        """Handles and text of the most recent facts/insights that fit the prompt budget."""
        budget = self.config.llm_call.prompt_memory_chars
        facts = self.facts.values()
        shown: list[MemoryItem] = []
        used = 0
        for item in reversed(facts):
            if used + len(item.text) + 6 > budget * 2 // 3:
                break
            shown.append(item)
            used += len(item.text) + 6
        shown.reverse()
        handles = {f"F{i}": it.id for i, it in enumerate(shown, start=1)}
        by_id = {v: k for k, v in handles.items()}
        fact_lines = "\n".join(f"{h}: {self.facts.items[i].text}" for h, i in handles.items()) or "(none yet)"
        ins_rows = [{"id": it.id, "refs": [by_id.get(r, "?") for r in it.metadata.get("refs", [])], "text": it.text}
                    for it in self.insights.values()]
        ins_text = "\n".join(f"- {r['text']} (from {', '.join(r['refs'])})" for r in ins_rows)
        ins_text = fit(ins_text, budget - used) or "(none yet)"
        state = {"facts": [{"handle": h, "id": i, "text": self.facts.items[i].text} for h, i in handles.items()],
                 "insights": ins_rows}
        return handles, fact_lines, ins_text, state

    def _new_handles(self) -> list[str]:
        facts_schema = load_prompt("dualmem", "extract").schema["properties"]["facts"]
        return [f"N{j}" for j in range(1, min(facts_schema["maxItems"], self.config.llm_call.max_items) + 1)]

    def ingest(self, session: Session, persona: Persona | None = None) -> list[MemoryOp]:
        prompt = load_prompt("dualmem", "extract")
        ops: list[MemoryOp] = []
        for chunk in chunk_turns(session, self.settings.chunk_turns):
            prov = Provenance(session.id, tuple(t.id for t in chunk), session.timestamp)
            handles, fact_lines, ins_text, state = self._shown_memory()
            spec = CallSpec(prompt, {"persona": persona_text(persona), "session": session.id,
                                     "date": session.timestamp or "unknown", "facts": fact_lines,
                                     "insights": ins_text, "chunk": transcript(chunk)}, session.id, state,
                            id_fields={"refs": [*handles, *self._new_handles()]})
            outcome = self.model.run([spec])[0]
            if not outcome.ok:
                continue
            done, errors = apply_extraction(self.facts, self.insights, outcome.parsed, prov, handles,
                                            self.similar_fact, self.settings.min_insight_refs)
            ops.extend(done)
            self._note_errors(session.id, None, errors)
        return ops

    # -- retrieval -------------------------------------------------------------------------------

    def retrieve_many(self, queries: Sequence[str], k: int) -> list[list[RetrievedItem]]:
        items = self.memory_items()
        results = []
        for ranked in rank_items(self.cache, list(queries), items, k):
            hits = [(items[i], s) for i, s in ranked]
            seen = {it.id for it, _ in hits}
            for it, s in list(hits):
                for ref in it.metadata.get("refs", []) if it.kind == "insight" else []:
                    if ref not in seen and ref in self.facts:
                        hits.append((self.facts.items[ref], s))
                        seen.add(ref)
            results.append([RetrievedItem(item=it, score=s, rank=r) for r, (it, s) in enumerate(hits, start=1)])
        return results

    # -- state -----------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {"name": self.name, "config": self.config.model_dump(mode="json"),
                "facts": [it.model_dump(mode="json") for it in self.facts.values()],
                "insights": [it.model_dump(mode="json") for it in self.insights.values()],
                "op_errors": list(self.op_errors), "stats": self.log.stats()}

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"snapshot is of '{state.get('name')}', not '{self.name}'")
        self.facts = ItemStore("fact", [MemoryItem.model_validate(x) for x in state["facts"]])
        self.insights = ItemStore("insight", [MemoryItem.model_validate(x) for x in state["insights"]])
        self.op_errors = list(state.get("op_errors", []))
