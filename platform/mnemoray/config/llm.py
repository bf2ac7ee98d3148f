"""Which LLM engine a job uses, as one config block: only this changes between a laptop
(hf + tiny model) and a cluster (vllm, or an OpenAI-compatible endpoint)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from mnemoray.config.base import StrictModel, load_config
from mnemoray.config.names import EngineName


class TinyModel(StrictModel):
    """Build (once, cached) and use a tiny random model instead of a named checkpoint."""

    arch: Literal["qwen2", "llama"] = "qwen2"
    seed: int = 0


class EngineConfig(StrictModel):
    engine: EngineName = Field(description="a registered engine (mnemoray.llm.registry): hf, openai, vllm, ...")
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
