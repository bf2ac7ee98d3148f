"""The `vllm` rollout sampler on CPU, without vLLM: a stand-in `vllm` module plays the engine.

The stand-in follows the vLLM behaviour the sampler relies on (read in vLLM's source): one
request per prompt with SamplingParams(n), sample i seeded with seed + i, the n completions
of a request by `index`, the eos token kept in `token_ids`, finish_reason "stop" or "length",
and `collective_rpc` calling a method of the worker that `worker_extension_cls` was mixed into.
What only a real vLLM shows (kernels, its weight loaders, CUDA) is left to a GPU lane.
"""

from __future__ import annotations

import importlib
import os
import random
import subprocess
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from mnemoray.rl.rollout import HFSampler, PromptInput, SamplingSettings
from mnemoray.rl.rollout_registry import build_sampler
from mnemoray.rl.vllm_rollout import WORKER_EXTENSION, VLLMSampler, prompt_seed
from mnemoray.rl.vllm_worker import PolicyWeights


class FakeSamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.__dict__.update(kwargs)


class FakeModel:
    """vLLM's weight-loading contract: `load_weights(iterable of (name, tensor))` returns the
    names it loaded, an unknown name raises KeyError, a tied lm_head is skipped."""

    def __init__(self, hf: torch.nn.Module):
        self.hf = hf
        self.received: list[tuple[str, tuple[int, ...]]] = []
        self.events: list[str] = []

    def named_parameters(self):
        return self.hf.named_parameters()

    def load_weights(self, weights):
        self.events.append("load")
        params, loaded = dict(self.hf.named_parameters()), set()
        for name, tensor in weights:
            self.received.append((name, tuple(tensor.shape)))
            if name == "lm_head.weight" and name not in params:
                continue
            params[name].copy_(tensor)
            loaded.add(name)
        return loaded


class FakeWorkerBase:
    def __init__(self, model_path: str):
        from transformers import AutoModelForCausalLM

        self.model_runner = SimpleNamespace(model=FakeModel(AutoModelForCausalLM.from_pretrained(model_path)))
        self.model_config = SimpleNamespace(model=model_path)
        self.device = "cpu"


class FakeLLM:
    """`vllm.LLM` in process: generate from seeded random ids, collective_rpc on one worker."""

    finish_reason: str | None = None  # force every sample's finish_reason

    def __init__(self, model: str, **kwargs):
        self.model, self.kwargs = model, kwargs
        self.multiprocessing = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
        module, _, name = kwargs["worker_extension_cls"].rpartition(".")  # resolved by qualname, as vLLM does
        extension = getattr(importlib.import_module(module), name)
        self.worker = type("Worker", (FakeWorkerBase, extension), {})(model)
        self.calls: list[tuple[list, list]] = []
        self.rpc: list[str] = []
        self.prefix_resets = 0

    def generate(self, prompts, sampling_params, use_tqdm=True):
        self.calls.append((list(prompts), list(sampling_params)))
        return [SimpleNamespace(prompt_token_ids=list(prompt["prompt_token_ids"]),
                                outputs=[self.sample(params, i) for i in reversed(range(params.n))])  # any order
                for prompt, params in zip(prompts, sampling_params)]

    def sample(self, params, index: int) -> SimpleNamespace:
        rng = random.Random(params.seed + index)
        ids = [rng.randrange(5, 1000) for _ in range(rng.randint(1, params.max_tokens))]
        stopped = len(ids) < params.max_tokens and rng.random() < 0.7
        if stopped:
            ids.append(params.stop_token_ids[0])
        else:  # not stopped: it ran to max_tokens
            ids += [rng.randrange(5, 1000) for _ in range(params.max_tokens - len(ids))]
        reason = self.finish_reason or ("stop" if stopped else "length")
        return SimpleNamespace(index=index, token_ids=tuple(ids), text="(vllm's own text)", finish_reason=reason)

    def collective_rpc(self, method, timeout=None, args=(), kwargs=None):
        self.rpc.append(method)
        return [getattr(self.worker, method)(*args, **(kwargs or {}))]

    def reset_prefix_cache(self):
        self.prefix_resets += 1
        return True


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = types.ModuleType("vllm")
    module.LLM = FakeLLM
    module.SamplingParams = FakeSamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")  # restored after the test
    return module


@pytest.fixture
def sampler(fake_vllm, tiny_model: Path) -> VLLMSampler:
    return VLLMSampler(str(tiny_model), device="cuda", dtype="bfloat16")


@pytest.fixture(scope="module")
def hf(tiny_model: Path) -> HFSampler:
    return HFSampler(str(tiny_model))


PROMPTS = [
    PromptInput("a", ({"role": "user", "content": "hi"},)),
    PromptInput("b", ({"role": "system", "content": "You are Ada."}, {"role": "user", "content": "Who are you?"})),
    PromptInput("c", ({"role": "user", "content": "one"}, {"role": "assistant", "content": "two"},
                      {"role": "user", "content": "three?"})),
]


def test_the_registry_lists_vllm_without_importing_vllm():
    refuse = (
        "import sys\n"
        "class Refuse:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'vllm' or name.startswith('vllm.'):\n"
        "            raise AssertionError('imported ' + name)\n"
        "sys.meta_path.insert(0, Refuse())\n"
        "from mnemoray.rl.rollout_registry import ROLLOUTS\n"
        "spec = ROLLOUTS.spec('vllm')\n"
        "print(ROLLOUTS.names(), spec.requires, spec.target, 'torch' in sys.modules)\n"
        "from mnemoray.config.grpo import RolloutConfig\n"
        "import mnemoray.rl.vllm_rollout, mnemoray.rl.vllm_worker\n"
        "print(RolloutConfig(engine='vllm').engine)\n"
    )
    out = subprocess.run([sys.executable, "-c", refuse], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    listed, engine = out.stdout.strip().splitlines()[-2:]
    assert listed == "['hf', 'vllm'] vllm mnemoray.rl.vllm_rollout:VLLMSampler False"  # no torch to list names
    assert engine == "vllm"


def test_without_vllm_building_the_sampler_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tiny_model):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError, installed or not
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    with pytest.raises(RuntimeError, match=r"pip install 'mnemoray\[gpu\]'.*rollout.engine 'hf'"):
        VLLMSampler(str(tiny_model))
    with pytest.raises(RuntimeError, match="needs the vllm package"):
        build_sampler("vllm", str(tiny_model), device="cuda", dtype="bfloat16")


def test_the_engine_runs_in_process_with_the_worker_extension(sampler: VLLMSampler, tiny_model):
    llm = sampler.llm
    assert llm.multiprocessing == "0"  # set before the engine started: tensors reach the worker as they are
    assert llm.model == str(tiny_model) and llm.kwargs["dtype"] == "bfloat16"
    assert llm.kwargs["worker_extension_cls"] == WORKER_EXTENSION and llm.kwargs["enforce_eager"] is True
    assert isinstance(llm.worker, PolicyWeights)
    # vLLM refuses an extension attribute its worker already has: only our prefixed method is added
    assert [a for a in dir(PolicyWeights) if not a.startswith("__")] == ["mnemoray_load_weights"]


def test_prompts_are_tokenised_as_the_hf_sampler_does(sampler: VLLMSampler, hf: HFSampler):
    rollouts = sampler.generate(PROMPTS, SamplingSettings(n=2, max_new_tokens=6), seed=0)
    sent, _ = sampler.llm.calls[0]
    assert sent == [{"prompt_token_ids": hf.prompt_ids(p.messages)} for p in PROMPTS]  # token ids, not text
    for r in rollouts:
        assert list(r.prompt_ids) == hf.prompt_ids(next(p for p in PROMPTS if p.id == r.prompt_id).messages)
    assert sampler.eos_ids == hf.eos_ids


def test_n_samples_per_prompt_come_grouped_in_prompt_order(sampler: VLLMSampler):
    settings = SamplingSettings(n=4, max_new_tokens=5, temperature=0.7, top_p=0.9)
    rollouts = sampler.generate(PROMPTS, settings, seed=3)
    assert [r.id for r in rollouts] == [f"{p}/{s}" for p in "abc" for s in range(4)]
    _, params = sampler.llm.calls[0]
    for p in params:
        assert p.kwargs == {"n": 4, "temperature": 0.7, "top_p": 0.9, "max_tokens": 5, "seed": p.seed,
                            "stop_token_ids": sorted(sampler.eos_ids)}  # no top_k: vLLM's default is off
    for i in range(len(PROMPTS)):
        for s in range(4):
            expected = sampler.llm.sample(params[i], s)  # the completion with index s, whatever order vLLM gave
            r = rollouts[4 * i + s]
            assert r.response_ids == expected.token_ids and r.finished == (expected.finish_reason == "stop")
            assert r.text == sampler.tokenizer.decode(list(r.response_ids), skip_special_tokens=True)
            assert len(r.response_ids) <= 5


def test_finish_reason_decides_the_clipped_flag(sampler: VLLMSampler):
    rollouts = sampler.generate(PROMPTS, SamplingSettings(n=8, max_new_tokens=4), seed=1)
    stopped = [r for r in rollouts if r.finished]
    clipped = [r for r in rollouts if not r.finished]
    assert stopped and clipped
    assert all(r.response_ids[-1] in sampler.eos_ids for r in stopped)  # the eos token stays in the response
    assert all(len(r.response_ids) == 4 and r.response_ids[-1] not in sampler.eos_ids for r in clipped)
    (eos,) = sampler.eos_ids  # an eos as the last allowed token: "length" on vLLM releases that check it first
    capped = SimpleNamespace(index=0, token_ids=(7, 8, eos), finish_reason="length")
    assert sampler._rollout("a", 0, [3], capped).finished
    sampler.llm.finish_reason = "abort"
    with pytest.raises(RuntimeError, match="'abort'"):
        sampler.generate(PROMPTS[:1], SamplingSettings(n=2, max_new_tokens=4), seed=1)


def test_seeds_are_deterministic_and_apart_between_calls(sampler: VLLMSampler):
    settings = SamplingSettings(n=8, max_new_tokens=6)
    first = sampler.generate(PROMPTS, settings, seed=11)
    assert sampler.generate(PROMPTS, settings, seed=11) == first
    assert sampler.generate(PROMPTS, settings, seed=12) != first

    def sample_seeds(seed: int) -> set[int]:  # vLLM seeds sample s of a prompt with its seed + s
        return {prompt_seed(seed, i, 8) + s for i in range(len(PROMPTS)) for s in range(8)}

    assert len(sample_seeds(11)) == 8 * len(PROMPTS)  # no two samples of a call share a seed
    assert not sample_seeds(11) & sample_seeds(12)  # nor a sample of the next step's call
    assert [p.seed for p in sampler.llm.calls[0][1]] == [prompt_seed(11, i, 8) for i in range(len(PROMPTS))]
    assert all(0 <= prompt_seed(s, i, 8) + 7 < 2**31 for s in (0, -5, 10**12) for i in range(50))


def _perturbed_state(model_path: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    other = AutoModelForCausalLM.from_pretrained(str(model_path))
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    return other.state_dict()


def test_load_weights_hands_every_tensor_to_the_worker(sampler: VLLMSampler, tiny_model):
    from mnemoray.rl.weights import pack_weights, unpack_weights

    state = _perturbed_state(tiny_model)
    assert sampler.load_weights(unpack_weights(pack_weights(state)), 5) == 5 and sampler.version == 5
    llm, model = sampler.llm, sampler.llm.worker.model_runner.model
    assert llm.rpc == ["mnemoray_load_weights"] and llm.prefix_resets == 1  # no KV of the old weights reused
    assert model.received == [(name, tuple(t.shape)) for name, t in state.items()]  # every tensor, in order
    for name, param in model.hf.named_parameters():
        assert torch.equal(param, state[name]), name


def test_a_stream_of_weights_is_read_once_by_the_worker_in_process(fake_vllm, tiny_model):
    """A broadcast arrives bucket by bucket: the in-process worker pulls each tensor as the
    model's loader asks for it (nothing listed first); an engine over several GPUs, whose
    workers are other processes, gets a list."""
    state = _perturbed_state(tiny_model)
    pulled: list[str] = []

    def stream():
        for name, tensor in state.items():
            pulled.append(name)
            yield name, tensor

    one_gpu = VLLMSampler(str(tiny_model), device="cuda", dtype="bfloat16")
    model = one_gpu.llm.worker.model_runner.model
    real_load = model.load_weights

    def loader(weights):
        assert not isinstance(weights, list) and pulled == []  # a lazy iterator reaches the loader
        return real_load(weights)

    model.load_weights = loader
    assert one_gpu.load_weights(stream(), 4) == 4
    assert pulled == list(state) and model.received == [(n, tuple(t.shape)) for n, t in state.items()]
    for name, param in model.hf.named_parameters():
        assert torch.equal(param, state[name]), name
    two_gpus = VLLMSampler(str(tiny_model), device="cuda", dtype="bfloat16", tensor_parallel_size=2)
    sent: list[type] = []
    rpc = two_gpus.llm.collective_rpc
    two_gpus.llm.collective_rpc = lambda method, timeout=None, args=(), kwargs=None: (
        sent.append(type(args[0])), rpc(method, timeout, args, kwargs))[1]
    pulled.clear()
    assert two_gpus.load_weights(stream(), 1) == 1 and pulled == list(state) and sent == [list]


def test_weights_that_do_not_fit_are_refused(sampler: VLLMSampler, tiny_model):
    state = _perturbed_state(tiny_model)
    partial = {k: v for k, v in state.items() if ".layers.0." not in k}
    with pytest.raises(ValueError, match=r"do not fit the rollout model: missing \['model.layers.0"):
        sampler.load_weights(partial, 2)
    with pytest.raises(ValueError, match="do not fit the rollout model: unexpected 'nope.weight'"):
        sampler.load_weights({**state, "nope.weight": torch.zeros(1)}, 3)
    assert sampler.version == 0 and sampler.llm.prefix_resets == 0


def test_layerwise_reload_wraps_the_load_where_vllm_has_it(sampler: VLLMSampler, tiny_model,
                                                           monkeypatch: pytest.MonkeyPatch):
    model = sampler.llm.worker.model_runner.model
    reload = types.ModuleType("vllm.model_executor.model_loader.reload")
    reload.initialize_layerwise_reload = lambda m: model.events.append("initialize")
    reload.finalize_layerwise_reload = lambda m, config: model.events.append(f"finalize {config.model}")
    loader = types.ModuleType("vllm.model_executor.model_loader")
    loader.reload = reload
    for name, module in (("vllm.model_executor", types.ModuleType("vllm.model_executor")),
                         ("vllm.model_executor.model_loader", loader), (reload.__name__, reload)):
        monkeypatch.setitem(sys.modules, name, module)
    sampler.load_weights(_perturbed_state(tiny_model), 1)
    assert model.events == ["initialize", "load", f"finalize {tiny_model}"]


def test_a_grpo_run_without_vllm_is_refused_before_ray_starts(monkeypatch: pytest.MonkeyPatch):
    import ray

    from mnemoray.config import load_config
    from mnemoray.config.grpo import GRPOConfig
    from mnemoray.distributed.train.grpo import run_grpo
    from mnemoray.rl.rollout_registry import ROLLOUTS

    monkeypatch.setitem(sys.modules, "vllm", None)  # not importable, installed or not
    assert ROLLOUTS.spec("hf").missing() is None
    cfg = load_config(GRPOConfig, Path(__file__).parents[2] / "configs/train/grpo_local.yaml",
                      ["rollout.engine=vllm"])
    with pytest.raises(RuntimeError, match=r"rollout engine 'vllm' needs the 'vllm' package.*one of \['hf'\]"):
        run_grpo(cfg)
    assert not ray.is_initialized()
