"""RoleMemo synthesis rows: stage inputs as request rows, answers as outcome rows (pyarrow,
no Ray). Both Ray modes run these: stage by stage (`mnemoray.distributed.data.synth_stages`)
and streaming (`mnemoray.distributed.data.synth_stream`).

Schemas: BUILT_SCHEMA (an input record with its request columns; `needs_llm` false when
the stage asks nothing for it), ANSWERED_SCHEMA (plus the result columns of
`mnemoray.llm.rows`), OUT_SCHEMA (one finished input: kept records, rejects, LLM usage).
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mnemoray.config.synth import RoleMemoConfig
from mnemoray.llm.rows import RESULT_SCHEMA
from mnemoray.llm.types import ChatResult, Usage
from mnemoray.synth import assembly
from mnemoray.synth.stages import STAGE_BY_NAME, Outcome, Stage, count_tokens, reject

BUILT_SCHEMA = pa.schema([
    ("input_id", pa.string()), ("persona_id", pa.string()), ("record", pa.string()), ("id", pa.string()),
    ("messages", pa.string()), ("params", pa.string()), ("seed", pa.int64()), ("json_schema", pa.string()),
    ("needs_llm", pa.bool_()), ("build_error", pa.string()),
])
ANSWERED_SCHEMA = pa.schema(list(BUILT_SCHEMA) + list(RESULT_SCHEMA))
OUT_SCHEMA = pa.schema([
    ("input_id", pa.string()), ("persona_id", pa.string()), ("kept", pa.string()), ("rejects", pa.string()),
    ("calls", pa.int64()), ("attempts", pa.int64()), ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()), ("latency_s", pa.float64()),
])


@lru_cache(maxsize=4)
def config_from_json(cfg_json: str) -> RoleMemoConfig:
    """The run's config, parsed once per worker process (rows carry it as JSON text)."""
    return RoleMemoConfig.model_validate_json(cfg_json)


# -- worker functions (plain functions over pyarrow batches) ----------------------------------

def build_rows(records: list[dict[str, Any]], spec: Stage, cfg: RoleMemoConfig) -> pa.Table:
    """One row per input record with its request columns (no request: needs_llm false)."""
    out = []
    for record in records:
        rid = record["id"]
        built: dict[str, Any] = {"input_id": rid, "persona_id": record.get("persona_id", ""),
                                 "record": json.dumps(record, ensure_ascii=False), "id": rid, "needs_llm": False}
        try:
            request = spec.build(record, cfg) if spec.build else None
        except Exception as err:  # noqa: BLE001 - a malformed record becomes a reject, not a crash
            built["build_error"] = f"{type(err).__name__}: {err}"
            request = None
        if request is not None:
            built.update(id=request.id, needs_llm=True, seed=request.seed,
                         messages=json.dumps([m.model_dump() for m in request.messages]),
                         params=request.params.model_dump_json(), json_schema=json.dumps(request.json_schema))
        out.append(built)
    return pa.Table.from_pylist(out, schema=BUILT_SCHEMA)


def build_batch(batch: pa.Table, stage: str, cfg_json: str, skip: frozenset[str],
                personas: frozenset[str]) -> pa.Table:
    """Pending inputs of `batch` (kept rows of the source stage) with their request columns."""
    records = [json.loads(row["record"]) for row in batch.to_pylist()
               if row["id"] not in skip and (not row["persona_id"] or row["persona_id"] in personas)]
    return build_rows(records, STAGE_BY_NAME[stage], config_from_json(cfg_json))


def with_needs_llm(batch: pa.Table, value: bool) -> pa.Table:
    mask = pc.equal(batch.column("needs_llm"), pa.scalar(value))
    return batch.filter(mask)


def of_personas(batch: pa.Table, keep: list[str]) -> pa.Table:
    return batch.filter(pc.is_in(batch.column("persona_id"), value_set=pa.array(keep, pa.string())))


def conform_answered(batch: pa.Table) -> pa.Table:
    """Conform a batch to ANSWERED_SCHEMA (rows that skipped the LLM get null results)."""
    cols = []
    for f in ANSWERED_SCHEMA:
        cols.append(batch.column(f.name).cast(f.type) if f.name in batch.column_names else pa.nulls(len(batch), f.type))
    return pa.Table.from_arrays(cols, schema=ANSWERED_SCHEMA)


def row_result(row: dict[str, Any]) -> ChatResult | None:
    if not row["needs_llm"]:
        return None
    parsed = json.loads(row["parsed"]) if row.get("parsed") else None
    return ChatResult(id=row["id"], text=row.get("text") or "", parsed=parsed, error=row.get("error"),
                      error_kind=row.get("error_kind"), attempts=int(row.get("attempts") or 0),
                      usage=Usage(prompt_tokens=int(row.get("prompt_tokens") or 0),
                                  completion_tokens=int(row.get("completion_tokens") or 0)),
                      latency_s=float(row.get("latency_s") or 0.0))


def outcome_row(input_id: str, persona_id: str, outcome: Outcome, result: ChatResult | None) -> dict[str, Any]:
    return {
        "input_id": input_id,
        "persona_id": persona_id,
        "kept": json.dumps(outcome.kept, ensure_ascii=False),
        "rejects": json.dumps(outcome.rejects, ensure_ascii=False),
        "calls": 0 if result is None else 1,
        "attempts": 0 if result is None else result.attempts,
        "prompt_tokens": 0 if result is None else result.usage.prompt_tokens,
        "completion_tokens": 0 if result is None else result.usage.completion_tokens,
        "latency_s": 0.0 if result is None else result.latency_s,
    }


def parse_batch(batch: pa.Table, stage: str, cfg_json: str) -> pa.Table:
    spec, cfg = STAGE_BY_NAME[stage], config_from_json(cfg_json)
    out = []
    for row in batch.to_pylist():
        record = json.loads(row["record"])
        result = row_result(row)
        if row.get("build_error"):
            outcome = Outcome(rejects=[reject(record, "bad_input", row["build_error"])])
        else:
            try:
                outcome = spec.parse(record, result, cfg)
            except Exception as err:  # noqa: BLE001 - keep going; the record and raw text are kept
                outcome = Outcome(rejects=[reject(record, "parse_error", f"{type(err).__name__}: {err}",
                                                  result.text if result else "")])
        out.append(outcome_row(row["input_id"], row["persona_id"], outcome, result))
    return pa.Table.from_pylist(out, schema=OUT_SCHEMA)


class AssembleHistories:
    """map_groups UDF: all safe dialogues of one persona -> one history record."""

    def __init__(self, cfg_json: str, pool: list[tuple[str, int]], personas_path: str):
        self.cfg = config_from_json(cfg_json)
        self.pool = [assembly.PoolEntry(i, t) for i, t in pool]
        table = pq.read_table(personas_path, columns=["id", "record"])
        self.personas = dict(zip(table.column(0).to_pylist(), table.column(1).to_pylist()))

    def __call__(self, group: pa.Table) -> pa.Table:
        dialogues = [json.loads(r) for r in group.column("record").to_pylist()]
        pid = dialogues[0]["persona_id"]
        persona = json.loads(self.personas[pid])
        qtokens = {d["id"]: count_tokens(d["fact_query"]["question"], self.cfg.tokenizer) for d in dialogues}
        history = assembly.assemble(persona, dialogues, self.pool, qtokens, self.cfg.target_tokens,
                                    self.cfg.assembly, self.cfg.seed)
        row = outcome_row(pid, pid, Outcome(kept=[history]), None)
        return pa.Table.from_pylist([row], schema=OUT_SCHEMA)
