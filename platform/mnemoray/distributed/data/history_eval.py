"""Every per-history evaluation on Ray Data: one history per task through a pool of
`HistoryEvaluator` actors (`mnemoray.eval.per_history`), rows streamed to the driver.

The driver appends each finished history's rows to out/per_query.jsonl as they arrive (a
crash keeps what was scored), then rewrites the file in a deterministic order so two runs
diff cleanly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mnemoray.config.ray import RayConfig
from mnemoray.distributed.runtime import map_one_per_task, ray_session
from mnemoray.eval.per_history import HistoryEvaluator
from mnemoray.eval.report import PerQueryWriter
from mnemoray.records import EvalSample


def row_order(row: dict[str, Any]) -> tuple[Any, ...]:
    return row["history_id"], row["visible_sessions"], row["query_id"]


def stream_history_rows(samples: list[EvalSample], evaluator: dict[str, Any], ray_cfg: RayConfig, out: Path,
                        on_history: Callable[[str, int], None] | None = None) -> list[dict[str, Any]]:
    """Evaluate `samples` with `HistoryEvaluator(**evaluator)` actors; returns the sorted rows.

    `on_history(history_id, n_rows)` is called as each history finishes (progress output).
    """
    writer = PerQueryWriter(out / "per_query.jsonl")
    rows: list[dict[str, Any]] = []
    with ray_session(ray_cfg):
        ds = map_one_per_task([{"sample": s.model_dump_json()} for s in samples], HistoryEvaluator, evaluator,
                              ray_cfg)
        for row in ds.iter_rows():
            got = json.loads(row["rows"])
            writer.write(got)
            rows.extend(got)
            if on_history:
                on_history(row["history_id"], len(got))
    writer.close()
    rows.sort(key=row_order)
    writer = PerQueryWriter(out / "per_query.jsonl")
    writer.write(rows)
    writer.close()
    return rows


def evaluator_kwargs(kind: str, cfg: Any, settings: dict[str, Any], engines: dict[str, dict[str, Any]] | None = None,
                     similarity: dict[str, Any] | None = None) -> dict[str, Any]:
    """`HistoryEvaluator` arguments from an evaluation config (memory, bank, torch threads)."""
    return {"kind": kind, "memory": cfg.memory.model_dump(mode="json"),
            "memory_bank": str(cfg.memory_bank) if cfg.memory_bank else None, "settings": settings,
            "engines": engines or {}, "similarity": similarity,
            "torch_threads": getattr(cfg, "torch_threads", None), "service": _service(cfg)}


def _service(cfg: Any) -> dict[str, str] | None:
    """The memory service an evaluation runs through (`service:`), with the admin key read here."""
    url = getattr(cfg, "service", None)
    if not url:
        return None
    from mnemoray.config import ConfigError
    from mnemoray.service.remote import check_service
    from mnemoray.service.tenants import load_admin_key

    try:
        admin_key = load_admin_key(None)
        check_service(url, admin_key)
        return {"url": url, "admin_key": admin_key}
    except ValueError as err:
        raise ConfigError(f"key 'service': {err}") from None
