"""Local transformers engine: batched chat generation with per-request control.

One `model.generate` call serves a whole batch even when its requests differ: each row
keeps its own max_tokens and stop strings (a stopping criterion), its own temperature,
top_p and seed (a sampler with one torch.Generator per row, so a request's sample does not
depend on its neighbours), and its own JSON schema or none (xgrammar matchers per row).
xgrammar's ready-made HF processor assumes one grammar for every row and that every row
keeps accepting tokens, which per-row limits break, hence the small processors here.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)

from mnemoray.llm.types import ChatRequest, ChatResult, Usage

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # org/name, usable if already in the local HF cache


class _RowGrammar(LogitsProcessor):
    """Mask each constrained row to the tokens its JSON grammar allows next."""

    def __init__(self, grammars: list[Any], vocab_size: int, banned: list[int]):
        self.matchers: list[Any] = [None] * len(grammars)
        self.bitmask = None
        if any(g is not None for g in grammars):  # xgrammar is only needed when a row has a schema
            import xgrammar as xgr

            self._xgr = xgr
            self.matchers = [xgr.GrammarMatcher(g) if g is not None else None for g in grammars]
            self.bitmask = xgr.allocate_token_bitmask(len(grammars), vocab_size)
        self.banned = banned
        self.started = False

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.started:
            for i, matcher in enumerate(self.matchers):
                if matcher is not None and not matcher.is_terminated():
                    if not matcher.accept_token(int(input_ids[i, -1])):
                        self.matchers[i] = None  # row already stopped (length/stop string): padding follows
        self.started = True
        if self.banned:
            scores[:, self.banned] = float("-inf")
        rows = [i for i, m in enumerate(self.matchers) if m is not None and not m.is_terminated()]
        if rows:
            for i in rows:
                self.matchers[i].fill_next_token_bitmask(self.bitmask, i)
            if scores.device.type == "cuda":
                self._xgr.apply_token_bitmask_inplace(scores, self.bitmask.to(scores.device), indices=rows)
            else:
                cpu = scores.to("cpu")
                self._xgr.apply_token_bitmask_inplace(cpu, self.bitmask, indices=rows)
                scores = cpu.to(scores.device)
        return scores


class _RowSampler(LogitsProcessor):
    """Sample sampled rows with their own generator; leave greedy rows to argmax.

    generate() runs greedy; a sampled row's scores become -inf except the drawn token.
    """

    def __init__(self, temperatures: list[float], top_ps: list[float], generators: list[torch.Generator | None]):
        self.temperatures, self.top_ps, self.generators = temperatures, top_ps, generators

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for i, temp in enumerate(self.temperatures):
            gen = self.generators[i]
            if temp <= 0 or gen is None:
                continue
            row = scores[i].float().cpu()
            if not torch.isfinite(row).any():
                continue
            probs = torch.softmax(row / temp, dim=-1)
            if self.top_ps[i] < 1.0:
                sorted_p, order = torch.sort(probs, descending=True)
                drop = (torch.cumsum(sorted_p, 0) - sorted_p) >= self.top_ps[i]
                probs[order[drop]] = 0.0
            token = int(torch.multinomial(probs, 1, generator=gen))
            scores[i] = float("-inf")
            scores[i, token] = 0.0
        return scores


class _RowLimits(StoppingCriteria):
    """Stop a row at its own max_tokens or when its text contains one of its stop strings."""

    def __init__(self, start: int, max_tokens: list[int], stops: list[list[str]], tokenizer: Any):
        self.start, self.max_tokens, self.stops, self.tokenizer = start, max_tokens, stops, tokenizer

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        produced = input_ids.shape[1] - self.start
        done = [produced >= m for m in self.max_tokens]
        for i, stops in enumerate(self.stops):
            if stops and not done[i]:
                text = self.tokenizer.decode(input_ids[i, self.start:], skip_special_tokens=True)
                done[i] = any(s in text for s in stops)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


@dataclass
class _Item:
    index: int
    request: ChatRequest
    prompt: str
    grammar: Any


def _cut_at_stop(text: str, stops: list[str] | None) -> str:
    cuts = [text.find(s) for s in stops or [] if s and s in text]
    return text[: min(cuts)] if cuts else text


def _failure(request: ChatRequest, message: str) -> ChatResult:
    return ChatResult(id=request.id, error=message, error_kind="engine")


class HFEngine:
    """Generate with a local transformers checkpoint (loaded by path, offline)."""

    name = "hf"

    def __init__(self, model: str, device: str = "cpu", dtype: str = "float32", batch_size: int = 8):
        local = Path(model).expanduser()
        if not local.exists() and not _HUB_ID.match(str(model)):
            raise FileNotFoundError(f"{model}: no such model folder")
        self.model = str(local) if local.exists() else str(model)
        self.device = device
        self.batch_size = max(1, int(batch_size))
        self.tokenizer = AutoTokenizer.from_pretrained(self.model, local_files_only=True)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.lm = AutoModelForCausalLM.from_pretrained(
            self.model, dtype=getattr(torch, dtype), local_files_only=True
        ).to(device)
        self.lm.eval()
        self.vocab_size = int(self.lm.config.get_text_config().vocab_size)
        self.eos_ids = self._eos_ids()
        self.pad_id = int(self.tokenizer.pad_token_id)
        self._compiler: Any = None
        self._grammars: dict[str, Any] = {}

    @classmethod
    def from_config(cls, cfg: Any, model: str) -> HFEngine:
        """The engine an EngineConfig describes (`mnemoray.llm.registry.build_engine`)."""
        return cls(model, device=cfg.device, dtype=cfg.dtype, batch_size=cfg.batch_size)

    def _eos_ids(self) -> list[int]:
        ids: set[int] = set()
        gen_eos = getattr(self.lm.generation_config, "eos_token_id", None)
        for value in (gen_eos, self.tokenizer.eos_token_id):
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, (list, tuple)):
                ids.update(int(v) for v in value)
        if not ids:
            raise ValueError(f"{self.model}: no eos token in tokenizer or generation_config")
        return sorted(ids)

    def _grammar(self, schema: dict[str, Any]) -> Any:
        """Compile (once per distinct schema) a JSON grammar without free whitespace."""
        import xgrammar as xgr

        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            if self._compiler is None:
                info = xgr.TokenizerInfo.from_huggingface(
                    self.tokenizer, vocab_size=self.vocab_size, stop_token_ids=self.eos_ids
                )
                self._compiler = xgr.GrammarCompiler(info)
            # Compile the schema as written: property order is the order the model writes.
            self._grammars[key] = self._compiler.compile_json_schema(json.dumps(schema), any_whitespace=False)
        return self._grammars[key]

    def generate(self, requests: list[ChatRequest]) -> list[ChatResult]:
        results: list[ChatResult | None] = [None] * len(requests)
        items: list[_Item] = []
        for i, req in enumerate(requests):
            try:
                prompt = self.tokenizer.apply_chat_template(
                    [m.model_dump() for m in req.messages], tokenize=False, add_generation_prompt=True
                )
            except Exception as err:  # noqa: BLE001 - a bad request fails alone
                results[i] = _failure(req, f"chat template: {type(err).__name__}: {err}")
                continue
            try:
                grammar = self._grammar(req.json_schema) if req.json_schema is not None else None
            except Exception as err:  # noqa: BLE001
                results[i] = _failure(req, f"cannot compile json_schema: {type(err).__name__}: {err}")
                continue
            items.append(_Item(i, req, prompt, grammar))
        # Similar lengths together: less padding per batch.
        items.sort(key=lambda it: len(it.prompt))
        for start in range(0, len(items), self.batch_size):
            chunk = items[start : start + self.batch_size]
            try:
                for item, result in zip(chunk, self._run(chunk)):
                    results[item.index] = result
            except Exception as err:  # noqa: BLE001 - typed failure instead of losing the batch
                for item in chunk:
                    results[item.index] = _failure(item.request, f"{type(err).__name__}: {err}")
        return [r for r in results if r is not None]

    def _run(self, chunk: list[_Item]) -> list[ChatResult]:
        began = time.perf_counter()
        enc = self.tokenizer(
            [it.prompt for it in chunk], return_tensors="pt", padding=True, add_special_tokens=False
        ).to(self.device)
        width = enc["input_ids"].shape[1]
        params = [it.request.params for it in chunk]
        generators = []
        for it in chunk:
            if it.request.params.temperature > 0:
                gen = torch.Generator(device="cpu")
                if it.request.seed is not None:
                    gen.manual_seed(int(it.request.seed))
                else:
                    gen.seed()
                generators.append(gen)
            else:
                generators.append(None)
        banned = [self.pad_id] if self.pad_id not in self.eos_ids else []
        processors = LogitsProcessorList([
            _RowGrammar([it.grammar for it in chunk], self.vocab_size, banned),
            _RowSampler([p.temperature for p in params], [p.top_p for p in params], generators),
        ])
        limits = _RowLimits(width, [p.max_tokens for p in params], [p.stop or [] for p in params], self.tokenizer)
        config = GenerationConfig(
            do_sample=False,
            max_new_tokens=max(p.max_tokens for p in params),
            eos_token_id=self.eos_ids,
            pad_token_id=self.pad_id,
        )
        with torch.inference_mode():
            out = self.lm.generate(
                **enc,
                generation_config=config,
                logits_processor=processors,
                stopping_criteria=StoppingCriteriaList([limits]),
            )
        latency = time.perf_counter() - began
        prompt_lens = enc["attention_mask"].sum(dim=1).tolist()
        results = []
        for row, it in enumerate(chunk):
            tokens = out[row, width:].tolist()[: it.request.params.max_tokens]
            used = len(tokens)
            for pos, tok in enumerate(tokens):
                if tok in self.eos_ids:
                    used = pos + 1  # the eos counts as a completion token, as in vLLM
                    tokens = tokens[:pos]
                    break
                if tok == self.pad_id:
                    used = pos
                    tokens = tokens[:pos]
                    break
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            results.append(ChatResult(
                id=it.request.id,
                text=_cut_at_stop(text, it.request.params.stop),
                usage=Usage(prompt_tokens=int(prompt_lens[row]), completion_tokens=used),
                latency_s=latency,
            ))
        return results
