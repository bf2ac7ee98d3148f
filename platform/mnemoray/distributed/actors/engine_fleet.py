"""A long-lived fleet of engine actors shared by every stage of a streaming pipeline.

One pool per pipeline stage (what `run_requests` builds) splits the endpoint's capacity
between stages and pays an actor start per stage; a fleet is started once, and every stage
sends its batches to it, so one `max_in_flight` bound per actor covers the whole job and
stays full while any stage has work. Actors restart after a crash and Ray re-runs the calls
they had in hand (`max_restarts=-1`, `max_task_retries=-1`), so a killed engine worker
loses nothing.

`answer(batch)` takes and returns pyarrow tables in the row format of
`mnemoray.distributed.data.llm_requests` (request columns in, result columns appended).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import ray

from mnemoray.config.llm import EngineConfig
from mnemoray.llm.registry import engine_spec, with_resolved_model
from mnemoray.llm.rows import BatchAnswerer


def actor_options(cfg: EngineConfig) -> dict[str, Any]:
    """Restart forever (re-running the calls in hand) with the engine's resources: a remote
    client overlaps many batches on one connection pool; a local model takes one at a time."""
    return {"max_restarts": -1, "max_task_retries": -1, **engine_spec(cfg).actor_resources(cfg)}


def start_fleet(cfg: EngineConfig, actors: int, ask_column: str | None = None) -> list[ray.actor.ActorHandle]:
    """Start `actors` engine actors (the tiny model, if any, is built here once)."""
    if actors < 1:
        raise ValueError(f"a fleet needs at least one actor, not {actors}")
    cfg = with_resolved_model(cfg)
    actor_cls = ray.remote(BatchAnswerer).options(**actor_options(cfg))
    return [actor_cls.remote(cfg.model_dump(mode="json"), ask_column) for _ in range(actors)]


class FleetClient:
    """Sends each batch to the fleet actor with the fewest batches outstanding from here."""

    def __init__(self, fleet: list[ray.actor.ActorHandle]):
        if not fleet:
            raise ValueError("empty engine fleet")
        self.fleet = fleet
        self.outstanding = [0] * len(fleet)

    async def answer(self, batch: pa.Table) -> pa.Table:
        i = min(range(len(self.fleet)), key=self.outstanding.__getitem__)
        self.outstanding[i] += 1
        try:
            return await self.fleet[i].answer.remote(batch)
        finally:
            self.outstanding[i] -= 1


def stop_fleet(fleet: list[ray.actor.ActorHandle]) -> None:
    for actor in fleet:
        ray.kill(actor, no_restart=True)


__all__ = ["FleetClient", "start_fleet", "stop_fleet"]
