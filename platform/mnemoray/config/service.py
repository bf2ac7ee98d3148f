"""`mnemoray serve memory`: the memory service's settings (docs/ARCHITECTURE.md, "Memory service").

One file says where the data lives, which framework new tenants get, the memory model
(an engine config: hf, any OpenAI-compatible URL, ...), and each Serve deployment's
replicas or autoscaling; `serve/memory_*.yaml` point Ray's own `serve run/deploy` at it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from mnemoray.config.base import StrictModel
from mnemoray.config.memory import MemoryConfig


class AutoscalingSettings(StrictModel):
    """Ray Serve's `autoscaling_config` (the keys most deployments need)."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(4, ge=1)
    target_ongoing_requests: float = Field(8, gt=0)
    upscale_delay_s: float = Field(10, ge=0)
    downscale_delay_s: float = Field(120, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> AutoscalingSettings:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must not exceed max_replicas")
        return self


class DeploymentSettings(StrictModel):
    """Replicas of one deployment: a fixed count, or autoscaling (then num_replicas is unused)."""

    num_replicas: int = Field(1, ge=1)
    autoscaling: AutoscalingSettings | None = None
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    max_ongoing_requests: int = Field(64, ge=1)

    def replicas(self) -> dict[str, Any]:
        """How many replicas, as Serve takes it: an autoscaling_config, or a fixed num_replicas."""
        if self.autoscaling is not None:
            return {"autoscaling_config": self.autoscaling.model_dump()}
        return {"num_replicas": self.num_replicas}

    def serve_options(self, access_log: bool = False) -> dict[str, Any]:
        """The deployment's `.options(...)`."""
        return {
            "max_ongoing_requests": self.max_ongoing_requests,
            "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus},
            "logging_config": {"enable_access_log": access_log},
            **self.replicas(),
        }


class BatchSettings(StrictModel):
    """`@serve.batch`: how many requests one call takes and how long it waits to fill."""

    batching: bool = True
    max_batch_size: int = Field(32, ge=1)
    batch_wait_timeout_s: float = Field(0.002, ge=0)


class EmbedderSettings(BatchSettings):
    model: str | None = Field(None, description="sentence-transformers folder; None = the packaged MiniLM")
    placement: Literal["store", "deployment"] = Field(
        "store", description="store: the encoder runs inside each store replica (searches share passes through "
        "an in-process micro-batcher; no hop); deployment: its own Serve deployment (`deployment:` scales it)")
    torch_threads: int = Field(1, ge=1, description="torch threads of the replica that encodes (more threads than "
                               "free cores make every pass slower)")
    busy_wait_timeout_s: float = Field(
        0.02, ge=0, description="with other searches in flight, how long a query waits for them to share its "
        "forward pass (0: never longer than batch_wait_timeout_s)")
    device: str = "cpu"
    deployment: DeploymentSettings = Field(default_factory=lambda: DeploymentSettings(num_cpus=0.5))


class ModelSettings(BatchSettings):
    serving: Literal["engine", "ray_serve_llm"] = Field(
        "engine", description="engine: the `llm:` engine inside the MemoryModel deployment, requests grouped by "
        "@serve.batch; ray_serve_llm (an `engine: vllm` config): ray.serve.llm's LLMServer deployment "
        "(vLLM, continuous batching) answers them")
    max_batch_size: int = Field(16, ge=1)
    batch_wait_timeout_s: float = Field(0.05, ge=0)
    deployment: DeploymentSettings = Field(default_factory=DeploymentSettings)


class ChatSettings(StrictModel):
    k: int = Field(5, ge=0, le=100, description="memories retrieved for each chat request")
    ingest: bool = Field(False, description="add each exchange to the tenant's memory as a session")
    max_tokens: int = Field(256, ge=1, description="answer length when the request names none")


class MemoryServiceConfig(StrictModel):
    data_dir: Path = Field(Path("runs/memory-service"), description="tenants.sqlite and one folder per tenant")
    admin_key_file: Path | None = Field(None, description="file holding the admin key; default $MNEMORAY_ADMIN_KEY")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    memory: MemoryConfig = Field(default_factory=MemoryConfig, description="framework and settings of new tenants")
    llm: Path | None = Field(None, description="engine config of the memory model and chat model (configs/llm/)")
    llm_overrides: list[str] = Field(default_factory=list, description="key=value settings of the engine config")
    model_id: str = Field("memory", description="the `model` name /v1/chat/completions answers to")
    model: ModelSettings = Field(default_factory=ModelSettings)
    embedder: EmbedderSettings = Field(default_factory=EmbedderSettings)
    store_placement: Literal["ingress", "deployment"] = Field(
        "ingress", description="ingress: tenants' memories live in each ingress replica (no hop); deployment: "
        "the MemoryStore deployment (`store:` scales it)")
    store: DeploymentSettings = Field(default_factory=lambda: DeploymentSettings(num_cpus=0.5))
    ingress: DeploymentSettings = Field(default_factory=lambda: DeploymentSettings(num_cpus=0.0,
                                                                                    max_ongoing_requests=256))
    chat: ChatSettings = Field(default_factory=ChatSettings)
    access_log: bool = Field(False, description="Serve's access log line per request (costs CPU on every call)")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="larger request bodies answer 413")
    max_import_bytes: int = Field(268_435_456, ge=1024, description="the body limit of POST /v1/import")
    max_attempts: int = Field(5, ge=1, description="tries of a session before it is marked failed")
    retry_interval_s: float = Field(5.0, gt=0, description="how often pending sessions are retried")
