"""Chat requests and results as table rows (pyarrow), and the batch answerer every Ray
path wraps; plain Python, no Ray.

Input rows: `id`, `messages` (list of {role, content}, or its JSON text), optional `params`
(SamplingParams fields), `seed`, `json_schema` (dict or JSON text). Answered rows: the same
columns plus RESULT_SCHEMA: `text`, `parsed` (JSON text or null), `error`, `error_kind`,
`prompt_tokens`, `completion_tokens`, `attempts`, `latency_s`. A row that cannot even be
read as a request comes back with `error_kind="input"` instead of being dropped.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from mnemoray.config.llm import EngineConfig
from mnemoray.llm.types import ChatMessage, ChatRequest, ChatResult, SamplingParams

RESULT_SCHEMA = pa.schema([
    ("text", pa.string()),
    ("parsed", pa.string()),
    ("error", pa.string()),
    ("error_kind", pa.string()),
    ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()),
    ("attempts", pa.int64()),
    ("latency_s", pa.float64()),
])


def maybe_json(value: Any) -> Any:
    """JSON text decoded; anything else (already decoded, or empty) as it is."""
    return json.loads(value) if isinstance(value, str) and value.strip() else value


def row_to_request(row: dict[str, Any]) -> ChatRequest:
    """One dataset row as a request; raises ValueError/TypeError on a malformed row."""
    params = maybe_json(row.get("params")) or {}
    # Arrow fills struct fields missing in this row with None: drop them, keep defaults.
    params = {k: v for k, v in dict(params).items() if v is not None}
    seed = row.get("seed")
    return ChatRequest(
        id=str(row["id"]),
        messages=[ChatMessage(role=m["role"], content=m["content"]) for m in maybe_json(row["messages"])],
        params=SamplingParams(**params),
        seed=int(seed) if seed is not None else None,
        json_schema=maybe_json(row.get("json_schema")) or None,
    )


def _plain(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    return dump(mode="json") if callable(dump) else value


def result_columns(results: list[ChatResult | None]) -> dict[str, pa.Array]:
    """Result columns; a None entry (a row that asked nothing) gets nulls."""
    def col(get):
        return [None if r is None else get(r) for r in results]

    cols = {
        "text": col(lambda r: r.text),
        "parsed": col(lambda r: None if r.parsed is None else json.dumps(_plain(r.parsed))),
        "error": col(lambda r: r.error),
        "error_kind": col(lambda r: r.error_kind),
        "prompt_tokens": col(lambda r: r.usage.prompt_tokens),
        "completion_tokens": col(lambda r: r.usage.completion_tokens),
        "attempts": col(lambda r: r.attempts),
        "latency_s": col(lambda r: r.latency_s),
    }
    return {f.name: pa.array(cols[f.name], type=f.type) for f in RESULT_SCHEMA}


def append_columns(table: pa.Table, columns: dict[str, pa.Array]) -> pa.Table:
    """`table` with `columns` appended (replacing same-named ones: a rerun over answered rows)."""
    for name, array in columns.items():
        if name in table.column_names:
            table = table.drop_columns([name])
        table = table.append_column(name, array)
    return table


def result_row(row: dict[str, Any], result: ChatResult, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """`row` without the `drop` columns, with `result`'s columns."""
    out = {k: v for k, v in row.items() if k not in drop}
    out.update({k: v.to_pylist()[0] for k, v in result_columns([result]).items()})
    return out


def validated(result: ChatResult, schema: Any) -> ChatResult:
    """Parse + validate without re-asking (paths whose engine we do not drive ourselves)."""
    from mnemoray.llm.structured import ParseError, SchemaError, parse_and_validate

    if schema is None or not result.ok:
        return result
    try:
        return result.model_copy(update={"parsed": parse_and_validate(result.text, schema)})
    except (ParseError, SchemaError) as err:
        kind = "parse" if isinstance(err, ParseError) else "schema"
        return result.model_copy(update={"error": str(err), "error_kind": kind})


class BatchAnswerer:
    """One engine answering pyarrow batches of request rows (result columns appended).

    The body of every Ray path that runs an engine itself: Ray Data actor pools and the
    long-lived engine fleet wrap it. Rows whose `ask_column` is false ask nothing and
    pass through with null results; a malformed row fails alone (`error_kind="input"`),
    an engine crash fails the batch's rows (`"engine"`), never the job.
    """

    def __init__(self, engine_cfg: dict[str, Any] | EngineConfig, ask_column: str | None = None) -> None:
        from mnemoray.llm.registry import build_engine

        self.cfg = engine_cfg if isinstance(engine_cfg, EngineConfig) else EngineConfig.model_validate(engine_cfg)
        self.engine = build_engine(self.cfg)
        self.ask_column = ask_column

    def answer(self, batch: pa.Table) -> pa.Table:
        from mnemoray.llm.structured import generate_structured

        rows = batch.to_pylist()
        results: list[ChatResult | None] = [None] * len(rows)
        requests: list[tuple[int, ChatRequest]] = []
        for i, row in enumerate(rows):
            if self.ask_column is not None and not row.get(self.ask_column):
                continue  # passes through with null results
            try:
                requests.append((i, row_to_request(row)))
            except (KeyError, TypeError, ValueError) as err:
                rid = str(row.get("id", i))
                results[i] = ChatResult(id=rid, error=f"bad request row: {err}", error_kind="input")
        if requests:
            batch_requests = [r for _, r in requests]
            try:
                answered = generate_structured(self.engine, batch_requests, max_retries=self.cfg.structured_retries)
            except Exception as err:  # noqa: BLE001 - fail the rows, not the whole job
                message = f"{type(err).__name__}: {err}"
                answered = [ChatResult(id=r.id, error=message, error_kind="engine") for r in batch_requests]
            for (i, _), result in zip(requests, answered, strict=True):
                results[i] = result
        return append_columns(batch, result_columns(results))

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.answer(batch)


# -- re-ask rounds of paths whose engine answers whole datasets (ray.data.llm's vLLM processor) --

# ray.data.llm reads `messages` as a list and writes its own `params` (a repr of the
# sampling params); the caller's values ride along as JSON and are put back, so the
# output rows have the input's columns and types
CALLER_COLUMN = "__mnemoray_caller"
CALLER_KEYS = ("messages", "params")


def caller_columns(row: dict[str, Any], messages: list[dict[str, str]]) -> str:
    """The caller's `messages` and `params` as JSON, to ride along through ray.data.llm."""
    kept = {k: row[k] for k in CALLER_KEYS if k in row}
    if not isinstance(kept["messages"], str):
        kept["messages"] = messages  # the parsed form: plain lists and dicts
    return json.dumps(kept, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))


def with_caller_columns(row: dict[str, Any]) -> dict[str, Any]:
    """`row` with the caller's columns put back (undoes what ray.data.llm changed)."""
    caller = json.loads(row[CALLER_COLUMN])
    out = {k: v for k, v in row.items() if k not in CALLER_KEYS}
    return {**out, **caller}


EARLIER_ROUNDS = "__mnemoray_earlier_rounds"  # usage, attempts and latency of earlier rounds, as JSON
COUNTED = ("prompt_tokens", "completion_tokens", "attempts", "latency_s")


def reaskable(row: dict[str, Any]) -> bool:
    """A row whose answer did not parse or validate against a usable schema."""
    from mnemoray.llm.structured import InvalidSchema, check_schema

    if row.get("error_kind") not in ("parse", "schema"):
        return False
    try:
        check_schema(maybe_json(row.get("json_schema")))
    except InvalidSchema:
        return False
    return True


def reask_row(row: dict[str, Any]) -> dict[str, Any]:
    """The row as its next request: the conversation so far, the bad answer, why it failed."""
    from mnemoray.llm.structured import feedback_request

    request = row_to_request(row)
    bad = ChatResult(id=request.id, text=row.get("text") or "")
    again = feedback_request(request, bad, str(row.get("error")))
    earlier = {k: row.get(k) or 0 for k in COUNTED}
    out = {k: v for k, v in row.items() if k not in RESULT_SCHEMA.names}
    # the caller's columns come back at the end, not the feedback conversation
    caller = caller_columns(row, [m.model_dump() for m in request.messages])
    return {**out, "messages": [m.model_dump() for m in again.messages], CALLER_COLUMN: caller,
            EARLIER_ROUNDS: json.dumps(earlier)}


def add_earlier_rounds(row: dict[str, Any]) -> dict[str, Any]:
    """Usage, attempts and latency of this round plus those of the rounds before it."""
    earlier = json.loads(row.pop(EARLIER_ROUNDS))
    return {**row, **{k: (row.get(k) or 0) + earlier[k] for k in COUNTED}}
