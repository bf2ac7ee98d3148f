"""The `vllm` rollout sampler: in-process vLLM (GPU clusters), with `HFSampler`'s contract.

Prompts are tokenised here, with the policy's tokenizer and chat template (`chat_prompt_ids`),
and reach vLLM as token ids, so a rollout's prompt ids are exactly what the trainer scores.
The engine runs in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`), so a weight push reaches
the model as the tensors themselves: `load_weights` calls the worker extension of
`rl/vllm_worker.py` through `LLM.collective_rpc`, then empties the prefix cache (its blocks
hold keys and values of the old weights). vLLM is imported only when a sampler is built.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mnemoray.llm.vllm_engine import missing_vllm, whole_prefills_on_cpu
from mnemoray.rl.rollout import (
    PromptInput,
    SamplingSettings,
    chat_prompt_ids,
    eos_ids,
    load_tokenizer,
    named_tensors,
)
from mnemoray.rl.sequences import Rollout

MISSING_VLLM = missing_vllm("the 'vllm' rollout engine", "use rollout.engine 'hf' otherwise")
WORKER_EXTENSION = "mnemoray.rl.vllm_worker.PolicyWeights"
ENGINE_DEFAULTS: dict[str, Any] = {"enforce_eager": True, "seed": 0}


def prompt_seed(seed: int, index: int, n: int) -> int:
    """The seed of the `index`-th prompt of a call; vLLM seeds its sample s with this + s.
    Hashed from (seed, index): the loop's step seeds are consecutive, and seed + index would
    give the next step the same sample seeds shifted by one."""
    digest = hashlib.blake2b(f"{seed}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % (2**31 - n)


def generation_eos(model_path: str) -> Any:
    """The eos id(s) `generate` would stop on for this checkpoint (as `HFSampler` reads them)."""
    from transformers import AutoConfig, GenerationConfig

    try:
        return GenerationConfig.from_pretrained(model_path).eos_token_id
    except OSError:  # no generation_config.json: transformers falls back to the model config
        return getattr(AutoConfig.from_pretrained(model_path), "eos_token_id", None)


class VLLMSampler:
    """`vllm.LLM` in this process; n samples per prompt as one request with SamplingParams(n)."""

    name = "vllm"

    def __init__(self, model_path: str, device: str = "cuda", dtype: str = "bfloat16", **engine_kwargs: Any):
        """`device` is recorded only: vLLM runs on its platform's device (the GPU Ray gave this
        actor). `engine_kwargs` go to `vllm.LLM` over `ENGINE_DEFAULTS` (e.g. gpu_memory_utilization)."""
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # read when the engine starts: keep it in process
        try:
            import vllm
        except ImportError as err:
            raise RuntimeError(MISSING_VLLM) from err
        self._vllm = vllm
        self.model_path = str(model_path)
        self.device = device
        self.tokenizer = load_tokenizer(self.model_path)
        self.eos_ids = eos_ids(generation_eos(self.model_path), self.tokenizer)
        kwargs = whole_prefills_on_cpu({**ENGINE_DEFAULTS, **engine_kwargs})
        self.engine_kwargs = kwargs
        self.llm = vllm.LLM(model=self.model_path, dtype=dtype, worker_extension_cls=WORKER_EXTENSION, **kwargs)
        self.version = 0

    def load_weights(self, state: Mapping[str, Any] | Iterable[tuple[str, Any]], version: int) -> int:
        """Hand a full state dict (names as the policy's `state_dict()`), or a stream of its
        (name, tensor) pairs, to the model in place. The engine runs in this process (one
        GPU), so the worker reads the stream itself, one tensor at a time; an engine over
        several GPUs gets the pairs as a list (its workers are other processes)."""
        weights: Any = named_tensors(state)
        if int(self.engine_kwargs.get("tensor_parallel_size", 1)) * int(
                self.engine_kwargs.get("pipeline_parallel_size", 1)) > 1:
            weights = list(weights)
        for result in self.llm.collective_rpc("mnemoray_load_weights", args=(weights,)):
            if result["missing"]:
                raise ValueError(f"weights do not fit the rollout model: missing {result['missing'][:5]}")
        self.llm.reset_prefix_cache()
        self.version = version
        return version

    def prompt_ids(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        return chat_prompt_ids(self.tokenizer, messages)

    def _params(self, settings: SamplingSettings, seed: int) -> Any:
        # top_k is left at vLLM's default (off), as HFSampler turns transformers' off
        return self._vllm.SamplingParams(
            n=settings.n, temperature=settings.temperature, top_p=settings.top_p,
            max_tokens=settings.max_new_tokens, seed=seed, stop_token_ids=sorted(self.eos_ids),
        )

    def generate(self, prompts: Sequence[PromptInput], settings: SamplingSettings, seed: int) -> list[Rollout]:
        """settings.n rollouts per prompt, prompt by prompt in order, samples 0..n-1."""
        if not prompts:
            return []
        encoded = [self.prompt_ids(p.messages) for p in prompts]
        params = [self._params(settings, prompt_seed(seed, i, settings.n)) for i in range(len(prompts))]
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in encoded], params, use_tqdm=False)
        if len(outputs) != len(prompts):
            raise RuntimeError(f"vllm returned {len(outputs)} outputs for {len(prompts)} prompts")
        out: list[Rollout] = []
        for prompt, ids, result in zip(prompts, encoded, outputs):
            samples = sorted(result.outputs, key=lambda c: c.index)
            if len(samples) != settings.n:
                raise RuntimeError(f"vllm returned {len(samples)} samples for prompt {prompt.id!r}, not {settings.n}")
            for sample, completion in enumerate(samples):
                out.append(self._rollout(prompt.id, sample, ids, completion))
        return out

    def _rollout(self, prompt_id: str, sample: int, prompt_ids: list[int], completion: Any) -> Rollout:
        """Finished as `HFSampler` means it: the response ends with an eos token (vLLM keeps it in
        token_ids). "stop" says so; so does an eos drawn as the last allowed token, which vLLM
        releases that check the length first report as "length"; else it was cut at max_tokens."""
        if completion.finish_reason not in ("stop", "length"):
            raise RuntimeError(f"vllm ended sample {prompt_id}/{sample} with {completion.finish_reason!r}")
        response = tuple(completion.token_ids)
        finished = completion.finish_reason == "stop" or (bool(response) and response[-1] in self.eos_ids)
        text = self.tokenizer.decode(response, skip_special_tokens=True)
        return Rollout(prompt_id, sample, tuple(prompt_ids), response, text, finished)

    def close(self) -> None:
        """Stop vLLM's engine core now rather than at interpreter exit."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None and callable(getattr(core, "shutdown", None)):
            core.shutdown()


__all__ = ["MISSING_VLLM", "VLLMSampler", "generation_eos", "prompt_seed"]
