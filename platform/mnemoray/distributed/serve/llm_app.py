"""OpenAI-compatible LLM endpoint on Ray Serve: `/v1/models`, `/v1/chat/completions`.

Every servable engine behind one URL shape, so Ray Data's HTTP processor, the eval
harness and `OpenAIEngine` call any of them the same way. The engine's spec
(`mnemoray.llm.registry`) names how it is served (`SERVE_PATHS` below):

- `hf_batch` (hf): a FastAPI ingress in front of a model deployment wrapping `HFEngine`. With
  `batching=True`, concurrent requests are grouped by `@serve.batch` into one `generate`
  call (one padded forward pass per step instead of one per request); with
  `batching=False` the replica runs them one at a time, the baseline the benchmark
  compares against. `response_format` JSON schemas reach HFEngine's constrained decoding.
- `ray_serve_llm` (vllm): `ray.serve.llm.build_openai_app`, imported only when asked for
  (needs vLLM).
"""

# No `from __future__ import annotations`: FastAPI must see real `Request` annotations.
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from mnemoray.distributed.serve.batched_engine import BatchedEngine
from mnemoray.llm.openai_protocol import (
    ProtocolError,
    error_body,
    models_body,
    to_chat_request,
    to_completion,
)
from mnemoray.llm.registry import ENGINES, engine_spec
from mnemoray.llm.types import ChatResult


@dataclass
class LLMAppConfig:
    """What `mnemoray serve llm` and the benchmark vary; everything else is fixed."""

    model: str
    engine: str = "hf"  # a servable engine: ENGINES.names() with a serve_path
    model_id: str | None = None  # name clients pass as `model`; default: folder name
    batching: bool = True
    max_batch_size: int = 16
    batch_wait_timeout_s: float = 0.05
    device: str = "cpu"
    dtype: str = "float32"
    num_replicas: int = 1
    num_cpus: float = 1.0
    engine_kwargs: dict[str, Any] | None = None  # vllm: passed to the engine
    # Serve's autoscaling_config for the model deployment (min/max_replicas, target_ongoing_requests,
    # ...); replaces num_replicas. On an autoscaling cluster, new replicas' demand adds GPU nodes.
    autoscaling: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        servable = servable_engines()
        if self.engine not in servable:
            raise ValueError(f"engine {self.engine!r} cannot be served here; use one of {servable}")
        if self.autoscaling is not None:
            from pydantic import ValidationError

            from mnemoray.config.service import AutoscalingSettings

            try:
                self.autoscaling = AutoscalingSettings.model_validate(self.autoscaling).model_dump()
            except ValidationError as err:
                problems = "; ".join(f"autoscaling.{'.'.join(map(str, e['loc'])) or '(all)'}: {e['msg']}"
                                     for e in err.errors())
                raise ValueError(f"LLM app args: {problems}") from None

    def replicas(self) -> dict[str, Any]:
        """The model deployment's replica options: autoscaling_config, or a fixed num_replicas."""
        if self.autoscaling is not None:
            return {"autoscaling_config": dict(self.autoscaling)}
        return {"num_replicas": self.num_replicas}

    def served_id(self) -> str:
        return self.model_id or Path(self.model).name or self.model


@serve.deployment
class HFChatModel(BatchedEngine):
    """One HFEngine per replica; requests arrive one by one through the handle."""

    def __init__(self, model: str, device: str, dtype: str, batching: bool, max_batch_size: int,
                 batch_wait_timeout_s: float) -> None:
        from mnemoray.llm.hf_engine import HFEngine

        self.engine = HFEngine(model, device=device, dtype=dtype, batch_size=max_batch_size)
        self._init_batching(batching, max_batch_size, batch_wait_timeout_s)


api = FastAPI(title="mnemoray LLM endpoint")


@serve.deployment
@serve.ingress(api)
class OpenAIIngress:
    """Translates the OpenAI wire format; the model deployment does the work."""

    def __init__(self, model: DeploymentHandle, model_id: str) -> None:
        self.model = model
        self.model_id = model_id

    @api.get("/v1/models")
    async def models(self) -> JSONResponse:
        return JSONResponse(models_body([self.model_id]))

    @api.post("/v1/chat/completions")
    async def chat(self, request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse(error_body("body is not JSON", 400), status_code=400)
        try:
            asked, chat_request = to_chat_request(body, request.headers.get("x-mnemoray-request-id"))
        except ProtocolError as err:
            return JSONResponse(error_body(str(err), err.status), status_code=err.status)
        if asked != self.model_id:
            message = f"model {asked!r} is not served here; available: [{self.model_id!r}]"
            return JSONResponse(error_body(message, 404, "not_found_error"), status_code=404)
        result: ChatResult = await self.model.generate.remote(chat_request)
        if not result.ok:
            message = f"{result.error_kind}: {result.error}"
            return JSONResponse(error_body(message, 500, "engine_error"), status_code=500)
        return JSONResponse(to_completion(self.model_id, result, chat_request.params.max_tokens))


def servable_engines() -> list[str]:
    """Registered engines `serve llm` can serve (a spec with a serve_path)."""
    return [spec.name for spec in ENGINES if spec.serve_path is not None]


def _build_hf_app(cfg: LLMAppConfig) -> Any:
    """`@serve.batch` model deployment behind the OpenAI ingress."""
    # Enough requests per replica to fill a batch twice (Serve's default is 5).
    ongoing = max(8, 2 * cfg.max_batch_size)
    model = HFChatModel.options(
        **cfg.replicas(),
        max_ongoing_requests=ongoing,
        ray_actor_options={"num_cpus": cfg.num_cpus},
    ).bind(cfg.model, cfg.device, cfg.dtype, cfg.batching, cfg.max_batch_size, cfg.batch_wait_timeout_s)
    most = (cfg.autoscaling or {}).get("max_replicas", cfg.num_replicas)
    return OpenAIIngress.options(
        max_ongoing_requests=max(64, ongoing * most * 2),
        ray_actor_options={"num_cpus": 0},
    ).bind(model, cfg.served_id())


def build_llm_app(cfg: LLMAppConfig) -> Any:
    """The Serve application for `serve.run`, by the engine's serve path."""
    return SERVE_PATHS[engine_spec(cfg.engine).serve_path](cfg)


def require_engine(engine: str) -> None:
    """Fail early and clearly when the engine's package is missing (`ray.serve.llm` cannot
    even be imported without vLLM)."""
    missing = engine_spec(engine).missing()
    if missing:
        raise RuntimeError(missing)


def vllm_llm_config(model: str, model_id: str, engine_kwargs: dict[str, Any] | None,
                    deployment_config: dict[str, Any]) -> Any:
    """`ray.serve.llm`'s LLMConfig for one vLLM model, with the engine defaults every vLLM
    engine here uses (guided JSON without free whitespace; whole prefills on the CPU build)
    and, on the CPU build, a CPU instead of a GPU reservation for the engine worker."""
    require_engine("vllm")
    from ray.serve.llm import LLMConfig

    from mnemoray.llm.vllm_engine import vllm_engine_kwargs, vllm_is_cpu_build

    placement = {"placement_group_config": {"bundle_per_worker": {"CPU": 1}}} if vllm_is_cpu_build() else {}
    return LLMConfig(
        model_loading_config={"model_id": model_id, "model_source": model},
        engine_kwargs=vllm_engine_kwargs(dict(engine_kwargs or {}), as_object=True),
        deployment_config=deployment_config,
        **placement,
    )


def _build_vllm_app(cfg: LLMAppConfig) -> Any:
    """`ray.serve.llm`'s OpenAI app over one vLLM model (`vllm_llm_config`)."""
    require_engine(cfg.engine)
    from ray.serve.llm import build_openai_app

    from mnemoray.llm.vllm_engine import vllm_is_cpu_build

    llm_config = vllm_llm_config(cfg.model, cfg.served_id(), cfg.engine_kwargs, cfg.replicas())
    # The CPU build: the ingress (light HTTP routing) reserves no CPU, so one replica fits a
    # 2-CPU machine next to the engine.
    ingress = {"ingress_deployment_config": {"ray_actor_options": {"num_cpus": 0}}} if vllm_is_cpu_build() else {}
    return build_openai_app({"llm_configs": [llm_config], **ingress})


SERVE_PATHS: dict[str, Callable[[LLMAppConfig], Any]] = {"hf_batch": _build_hf_app, "ray_serve_llm": _build_vllm_app}


def run_llm_app(cfg: LLMAppConfig, port: int = 8000, host: str = "127.0.0.1", name: str = "llm",
                route_prefix: str = "/") -> str:
    """Start HTTP on host:port, deploy the app, return the `/v1` base URL (non-blocking)."""
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_llm_app(cfg), name=name, route_prefix=route_prefix)
    return f"http://{host}:{port}{route_prefix.rstrip('/')}/v1"


def app_builder(args: dict[str, Any]) -> Any:
    """Entry for `serve run` / `serve deploy` config files (see serve/llm_local.yaml):
    Serve passes the application's `args` mapping here."""
    unknown = set(args) - set(LLMAppConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(
            f"unknown LLM app args {sorted(unknown)}; allowed: {sorted(LLMAppConfig.__dataclass_fields__)}"
        )
    return build_llm_app(LLMAppConfig(**args))


def serve_until_stopped(cfg: LLMAppConfig, port: int, host: str, address: str | None,
                        ready: Callable[[str], None]) -> None:
    """Start (or join) Ray, deploy, call `ready(url)`, and block until SIGTERM or Ctrl-C; then
    shut Serve and Ray down (what `mnemoray serve llm` runs)."""
    import ray

    from mnemoray.distributed.runtime import worker_runtime_env

    ray.init(address=address, ignore_reinit_error=True, runtime_env=worker_runtime_env())
    # Right after ray.init (which installs Ray's own fatal-signal handler, aborting on
    # SIGTERM) and before the app deploys: the HTTP proxy answers before serve.run
    # returns, and a SIGTERM sent then (a job runner stopping us) must still shut down
    # cleanly. A SIGTERM inside ray.init itself still meets Ray's handler.
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        ready(run_llm_app(cfg, port=port, host=host))
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
        ray.shutdown()
