"""Build one history's LLM-written memory (plain Python; the Ray pipeline maps it).

Returns everything the build job writes for the history: bank rows (one per memory item,
with provenance), the trajectory log of every memory-model call, counters and the full
snapshot, so a killed job can resume from what is on disk.
"""

from __future__ import annotations

from typing import Any

from mnemoray.config import MemoryConfig
from mnemoray.memory import LLM_FRAMEWORKS, build_memory
from mnemoray.memory.bank import bank_rows
from mnemoray.memory.trajectory import TrajectoryLog
from mnemoray.records import History


def build_history(history: History, config: MemoryConfig, engine: Any, embedder: Any = None,
                  max_retries: int = 2, max_sessions: int | None = None) -> dict[str, Any]:
    if config.name not in LLM_FRAMEWORKS:
        raise ValueError(f"'{config.name}' is not built by a memory model; choose one of {list(LLM_FRAMEWORKS)}")
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
