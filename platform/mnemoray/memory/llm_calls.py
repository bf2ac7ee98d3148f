"""Memory-model calls: build requests, run them through the structured pipeline, log them.

Frameworks describe calls (`CallSpec`) and get back validated JSON or a failure; they never
see engine details. Invalid output after the retries becomes a failed `CallOutcome` (counted
and written to the trajectory log) so a framework keeps going instead of crashing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mnemoray.config import LLMCallConfig
from mnemoray.llm.structured import generate_structured
from mnemoray.llm.types import ChatMessage, ChatRequest, ChatResult, Engine, SamplingParams
from mnemoray.memory.ops import OpError
from mnemoray.memory.prompts import PromptSpec, clamp_schema, restrict_ids
from mnemoray.memory.ranking import EmbeddingCache, rank_items
from mnemoray.memory.trajectory import TrajectoryLog
from mnemoray.records import RetrievedItem


@dataclass
class CallSpec:
    prompt: PromptSpec
    fields: dict[str, Any]
    session_id: str | None
    memory_state: Any
    max_chars: int | None = None  # per-call override of the string cap (e.g. core compression)
    id_fields: dict[str, list[str]] | None = None  # property -> the only handles its array may hold


@dataclass
class CallOutcome:
    parsed: Any
    error: str | None
    raw: str

    @property
    def ok(self) -> bool:
        return self.error is None


class MemoryModel:
    """The LLM behind a framework: one batched structured generation per list of calls."""

    def __init__(self, engine: Engine | None, settings: LLMCallConfig, log: TrajectoryLog, max_retries: int = 2):
        self.engine = engine
        self.settings = settings
        self.log = log
        self.max_retries = settings.max_retries if settings.max_retries is not None else max_retries

    def _request(self, spec: CallSpec) -> tuple[list[ChatMessage], ChatRequest]:
        s = self.settings
        messages = spec.prompt.messages(**spec.fields)
        schema = clamp_schema(spec.prompt.schema, spec.max_chars or s.max_text_chars, s.max_items)
        for key, allowed in (spec.id_fields or {}).items():
            schema = restrict_ids(schema, key, allowed)
        request = ChatRequest(
            messages=messages,
            params=SamplingParams(temperature=s.temperature, max_tokens=s.max_tokens),
            json_schema=schema,
            seed=0,
            metadata={"call": f"{spec.prompt.framework}/{spec.prompt.name}"},
        )
        return messages, request

    def run(self, specs: list[CallSpec]) -> list[CallOutcome]:
        if not specs:
            return []
        built = [self._request(s) for s in specs]
        if self.engine is None:
            results = [ChatResult(id=r.id, error="no memory-model engine configured", error_kind="engine")
                       for _, r in built]
        else:
            try:
                results = generate_structured(self.engine, [r for _, r in built], max_retries=self.max_retries)
            except Exception as err:  # noqa: BLE001 - an engine crash fails these calls, not the build
                results = [ChatResult(id=r.id, error=f"{type(err).__name__}: {err}", error_kind="engine")
                           for _, r in built]
        outcomes = []
        for spec, (messages, _), result in zip(specs, built, results):
            error = None if result.ok else f"{result.error_kind or 'error'}: {result.error}"
            parsed = result.parsed if result.ok else None
            self.log.record(
                call=f"{spec.prompt.framework}/{spec.prompt.name}",
                session_id=spec.session_id,
                messages=[m.model_dump() for m in messages],
                raw_output=result.text,
                parsed=parsed,
                error=error,
                memory_state=spec.memory_state,
                prompt_tokens=result.usage.prompt_tokens,
                completion_tokens=result.usage.completion_tokens,
            )
            outcomes.append(CallOutcome(parsed=parsed, error=error, raw=result.text))
        return outcomes


class LLMMemoryFramework:
    """Shared set-up of the frameworks whose memory a model writes: settings, log, model calls.

    Mixed in before `MemoryFramework`; the settings section of `MemoryConfig` is the one
    named like the framework (`config.dualmem`, `config.membuilder`, …).
    """

    name: str

    def __init__(self, config, engine=None, embedder=None, log: TrajectoryLog | None = None, max_retries: int = 2):
        self.config = config
        self.settings = getattr(config, self.name)
        self.log = log or TrajectoryLog(self.name)
        self.model = MemoryModel(engine, config.llm_call, self.log, max_retries)
        self.op_errors: list[str] = []
        self._embedder = embedder

    def embedding_cache(self):
        """Embeddings of memory texts, with the configured (or given) sentence encoder."""
        embedder = self._embedder
        if embedder is None:
            from mnemoray.index.embedder import Embedder

            embedder = Embedder.from_index_config(self.config.index)
        return EmbeddingCache(embedder)

    def _note_errors(self, session_id: str, call: str | None, errors: list[OpError]) -> None:
        """Count op errors and keep them as "<session> <call>: <error>" ("<session>: <error>" without a call)."""
        where = f"{session_id} {call}" if call else session_id
        self.log.note("op_errors", len(errors))
        self.op_errors.extend(f"{where}: {e}" for e in errors)


class EmbeddingRetrieval:
    """`retrieve`/`retrieve_many` ranking `memory_items()` by embedding through `self.cache`.

    Mixed in before `LLMMemoryFramework` by frameworks that set `self.cache = self.embedding_cache()`.
    """

    cache: EmbeddingCache

    def retrieve(self, query: str, k: int) -> list[RetrievedItem]:
        return self.retrieve_many([query], k)[0]

    def retrieve_many(self, queries: Sequence[str], k: int) -> list[list[RetrievedItem]]:
        items = self.memory_items()
        return [[RetrievedItem(item=items[i], score=s, rank=r) for r, (i, s) in enumerate(ranked, start=1)]
                for ranked in rank_items(self.cache, list(queries), items, k)]
