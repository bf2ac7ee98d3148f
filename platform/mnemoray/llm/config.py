"""Which LLM engine a job uses, as one config block; only the config changes between
a laptop (hf + tiny model) and a cluster (vllm, or an OpenAI-compatible endpoint)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from mnemoray.config import StrictModel, load_config
from mnemoray.llm.types import Engine


class TinyModel(StrictModel):
    """Build (once, cached) and use a tiny random model instead of a named checkpoint."""

    arch: Literal["qwen2", "llama"] = "qwen2"
    seed: int = 0


class EngineConfig(StrictModel):
    engine: Literal["hf", "openai", "vllm"]
    model: str | None = Field(None, description="checkpoint folder (hf, vllm) or served model name (openai)")
    tiny: TinyModel | None = Field(None, description="use a tiny random model built in tiny_cache_dir")
    base_url: str | None = Field(None, description="openai: endpoint such as http://host:8000/v1")
    api_key_env: str = Field("OPENAI_API_KEY", description="openai: name of the env var holding the key")
    max_in_flight: int = Field(64, ge=1)
    timeout_s: float = Field(60, gt=0)
    max_retries: int = Field(5, ge=0)
    transport: Literal["sdk", "aiohttp"] = Field(
        "aiohttp",
        description="openai: how requests go out: 'aiohttp' (bare aiohttp with tenacity retries; about a third of "
        "the client CPU per call, so more requests stay in flight) or 'sdk' (the official openai client); "
        "both retry the same faults and return the same typed results",
    )
    device: str = "cpu"
    dtype: str = "float32"
    batch_size: int = Field(8, ge=1)
    structured_retries: int = Field(2, ge=0, description="re-asks after unparsable or invalid JSON")
    cache_dir: Path | None = Field(None, description="response cache folder; None = no cache")
    tiny_cache_dir: Path = Path("~/.cache/mnemoray/tiny")
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="vllm: extra vllm.LLM arguments")

    @model_validator(mode="after")
    def _needs_a_model(self) -> EngineConfig:
        if self.model is None and self.tiny is None:
            raise ValueError("set either 'model' or 'tiny'")
        return self


def load_engine_config(path: str | Path | None = None, overrides: list[str] | None = None,
                       base: dict[str, Any] | None = None) -> EngineConfig:
    return load_config(EngineConfig, path, overrides, base=base)


def resolve_model(cfg: EngineConfig) -> str:
    """The model path or name to load; builds the tiny model on first use."""
    if cfg.model is not None:
        return cfg.model
    from mnemoray.llm.tiny import ensure_tiny

    assert cfg.tiny is not None
    return str(ensure_tiny(cfg.tiny_cache_dir, arch=cfg.tiny.arch, seed=cfg.tiny.seed))


def build_engine(cfg: EngineConfig) -> Engine:
    model = resolve_model(cfg)
    engine: Engine
    if cfg.engine == "hf":
        from mnemoray.llm.hf_engine import HFEngine

        engine = HFEngine(model, device=cfg.device, dtype=cfg.dtype, batch_size=cfg.batch_size)
    elif cfg.engine == "vllm":
        from mnemoray.llm.vllm_engine import VLLMEngine

        engine = VLLMEngine(model, **cfg.engine_kwargs)
    else:
        from mnemoray.llm.openai_engine import OpenAIEngine

        engine = OpenAIEngine(
            model=model,
            base_url=cfg.base_url,
            api_key=os.environ.get(cfg.api_key_env),
            max_in_flight=cfg.max_in_flight,
            timeout_s=cfg.timeout_s,
            max_retries=cfg.max_retries,
            transport=cfg.transport,
        )
    if cfg.cache_dir is not None:
        from mnemoray.llm.cache import CachedEngine, ResponseCache

        engine = CachedEngine(engine, ResponseCache(cfg.cache_dir))
    return engine
