"""Rollout samplers: n sampled responses per prompt, as token ids, from the current policy weights.

A sampler is the model half of a rollout engine: `generate(prompts, n, ...)` and
`load_weights(state_dict, version)`, so the policy workers can push each update to it.
The `hf` sampler runs transformers' `generate` (CPU or one GPU); the `vllm` sampler
(`rl/vllm_rollout.py`) plugs into the same registry (`ROLLOUTS`) for GPU clusters. Both
tokenise prompts with the functions below, so their prompt ids are the ones the trainer
scores. Sampling is seeded per call so a run is reproducible for a seed (on the same
hardware and batch).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mnemoray.rl.sequences import Rollout


@dataclass(frozen=True)
class SamplingSettings:
    n: int = 8  # responses per prompt (the GRPO group)
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0


@dataclass(frozen=True)
class PromptInput:
    id: str
    messages: tuple[Mapping[str, str], ...]


def load_tokenizer(model_path: str) -> Any:
    """The policy's tokenizer, padding on the left (batched `generate` appends on the right)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def chat_prompt_ids(tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> list[int]:
    """A prompt as the policy sees it: its chat template with the generation prompt, as ids."""
    ids = tokenizer.apply_chat_template([dict(m) for m in messages], add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if isinstance(ids, Mapping) else ids)


def eos_ids(eos: int | Sequence[int] | None, tokenizer: Any) -> set[int]:
    """The tokens that end a response: the generation config's eos id(s), else the tokenizer's."""
    return {eos} if isinstance(eos, int) else set(eos or [tokenizer.eos_token_id])


def named_tensors(state: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
    """(name, tensor) pairs of a state dict, or of a stream of them (a broadcast arriving
    bucket by bucket), so a sampler loads either form one tensor at a time."""
    return iter(state.items()) if isinstance(state, Mapping) else iter(state)


class HFSampler:
    """transformers `generate` with sampling; weights replaced in place by `load_weights`."""

    name = "hf"

    def __init__(self, model_path: str, device: str = "cpu", dtype: str = "float32", batch_size: int = 64,
                 model: Any = None):
        """`model`: sample with this already loaded model (the policy's own, when colocated)
        instead of loading one from `model_path` (which still gives the tokenizer)."""
        import torch
        from transformers import AutoModelForCausalLM

        self.model_path = model_path
        self.device = device
        self.batch_size = batch_size
        self.tokenizer = load_tokenizer(model_path)
        if model is None:
            model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype)).to(device)
            model.eval()
        self.model = model
        self.version = 0
        self.eos_ids = eos_ids(self.model.generation_config.eos_token_id, self.tokenizer)

    def load_weights(self, state: Mapping[str, Any] | Iterable[tuple[str, Any]], version: int) -> int:
        """Copy a full state dict (names as the policy's `state_dict()`), or a stream of its
        (name, tensor) pairs, into the model tensor by tensor."""
        import torch

        targets = self.model.state_dict(keep_vars=True)
        seen: set[str] = set()
        unexpected: list[str] = []
        with torch.no_grad():
            for name, tensor in named_tensors(state):
                target = targets.get(name)
                if target is None:
                    unexpected.append(name)
                    continue
                if tuple(tensor.shape) != tuple(target.shape):
                    raise ValueError(f"weights do not fit the rollout model: {name} has shape "
                                     f"{tuple(tensor.shape)}, the model's is {tuple(target.shape)}")
                target.copy_(tensor)
                seen.add(name)
        missing = [k for k in targets if k not in seen and not k.endswith("lm_head.weight")]  # tied to embeddings
        if missing or unexpected:
            raise ValueError(
                f"weights do not fit the rollout model: missing {missing[:5]}, unexpected {unexpected[:5]}")
        self.version = version
        return version

    def prompt_ids(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        return chat_prompt_ids(self.tokenizer, messages)

    def generate(self, prompts: Sequence[PromptInput], settings: SamplingSettings, seed: int) -> list[Rollout]:
        """settings.n rollouts per prompt, prompt by prompt in order, samples 0..n-1."""
        import torch

        encoded = [(p, self.prompt_ids(p.messages)) for p in prompts]
        jobs = [(p, ids, s) for p, ids in encoded for s in range(settings.n)]
        out: list[Rollout] = []
        generator_seed = seed
        for start in range(0, len(jobs), self.batch_size):
            chunk = jobs[start : start + self.batch_size]
            width = max(len(ids) for _, ids, _ in chunk)
            pad = self.tokenizer.pad_token_id
            input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for _, ids, _ in chunk], device=self.device)
            attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for _, ids, _ in chunk],
                                     device=self.device)
            torch.manual_seed(generator_seed)
            generator_seed += 1
            with torch.no_grad():
                generated = self.model.generate(
                    input_ids=input_ids, attention_mask=attention, do_sample=True,
                    temperature=settings.temperature, top_p=settings.top_p, top_k=0,
                    max_new_tokens=settings.max_new_tokens, pad_token_id=pad,
                    eos_token_id=sorted(self.eos_ids),
                )
            for (prompt, ids, sample), row in zip(chunk, generated[:, width:].tolist()):
                response, finished = [], False
                for token in row:
                    response.append(token)
                    if token in self.eos_ids:
                        finished = True
                        break
                text = self.tokenizer.decode(response, skip_special_tokens=True)
                out.append(Rollout(prompt.id, sample, tuple(ids), tuple(response), text, finished))
        return out


__all__ = ["HFSampler", "PromptInput", "SamplingSettings", "chat_prompt_ids", "eos_ids", "load_tokenizer",
           "named_tensors"]
