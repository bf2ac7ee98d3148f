"""Build one history's LLM-written memory (plain Python; the Ray pipeline runs `HistoryBuilder`).

Returns everything the build job writes for the history: bank rows (one per memory item,
with provenance), the trajectory log of every memory-model call, counters and the full
snapshot, so a killed job can resume from what is on disk.
"""

from __future__ import annotations

import json
from typing import Any

from mnemoray.config.memory import MemoryConfig
from mnemoray.memory.bank import bank_rows
from mnemoray.memory.registry import build_memory, llm_frameworks
from mnemoray.memory.trajectory import TrajectoryLog
from mnemoray.records import History
from mnemoray.torch_threads import set_torch_threads


def build_history(history: History, config: MemoryConfig, engine: Any, embedder: Any = None,
                  max_retries: int = 2, max_sessions: int | None = None) -> dict[str, Any]:
    if config.name not in llm_frameworks():
        raise ValueError(f"'{config.name}' is not built by a memory model; choose one of {llm_frameworks()}")
    log = TrajectoryLog(config.name, history.id)
    memory = build_memory(config, engine=engine, embedder=embedder, log=log, max_retries=max_retries)
    sessions = history.sessions[:max_sessions] if max_sessions else history.sessions
    ops = memory.ingest_many(sessions, history.persona)
    stats = {"sessions": len(sessions), "turns": sum(len(s.turns) for s in sessions), "ops": len(ops),
             "items": len(memory), **log.stats()}
    return {
        "history_id": history.id,
        "rows": bank_rows(history.id, config.name, memory.memory_items()),
        "trajectories": log.entries,
        "stats": stats,
        "snapshot": memory.snapshot(),
    }


class HistoryBuilder:
    """Builds whole histories with one memory model and one embedder; called with a batch
    `{"history": [History JSON]}` it returns `{"history_id", "result"}` (the Ray Data form)."""

    def __init__(self, memory: dict[str, Any], engine: dict[str, Any], max_sessions: int | None,
                 torch_threads: int | None):
        set_torch_threads(torch_threads)
        from mnemoray.config.llm import EngineConfig
        from mnemoray.index.embedder import Embedder
        from mnemoray.llm.registry import build_engine

        self.config = MemoryConfig.model_validate(memory)
        engine_cfg = EngineConfig.model_validate(engine)
        self.max_retries = engine_cfg.structured_retries
        self.engine = build_engine(engine_cfg)
        self.embedder = Embedder.from_index_config(self.config.index)
        self.max_sessions = max_sessions

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        ids, results = [], []
        for raw in batch["history"]:
            history = History.model_validate_json(raw)
            out = build_history(history, self.config, self.engine, self.embedder, self.max_retries, self.max_sessions)
            ids.append(history.id)
            results.append(json.dumps(out, ensure_ascii=False))
        return {"history_id": ids, "result": results}
