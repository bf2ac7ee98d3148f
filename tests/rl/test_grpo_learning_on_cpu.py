"""The GRPO update learns on a real (tiny) model in one process: sampled rollouts, rewards,
group advantages, the clipped loss — the mean reward rises, and falls with the sign flipped."""

from __future__ import annotations

import statistics

import pytest
import torch

from mnemoray.rl.advantages import group_advantages
from mnemoray.rl.losses import GRPOLossConfig
from mnemoray.rl.rollout import HFSampler, PromptInput, SamplingSettings
from mnemoray.rl.sequences import pack
from mnemoray.rl.update import TorchEngine, UpdatePlan, policy_update, score, select, worker_batch


def share_of_e(text: str) -> float:
    chars = [c for c in text if not c.isspace()]
    return sum(c == "e" for c in chars) / len(chars) if chars else 0.0


def _train(model_path: str, sign: float, steps: int = 20) -> list[float]:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    sampler = HFSampler(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    engine = TorchEngine(model, torch.optim.AdamW(model.parameters(), lr=1e-2), grad_accum=2)
    prompts = [PromptInput(f"p{i}", ({"role": "user", "content": f"write something {i}"},)) for i in range(4)]
    plan = UpdatePlan(loss=GRPOLossConfig(eps_high=0.28), minibatches=1, micro_batch_size=8)
    means = []
    for step in range(steps):
        rollouts = sampler.generate(prompts[(2 * step) % 4:][:2], SamplingSettings(n=8, max_new_tokens=24), seed=step)
        rewards = [share_of_e(r.text) for r in rollouts]
        means.append(statistics.fmean(rewards))
        advantages = group_advantages(rewards, [r.prompt_id for r in rollouts]).advantages * sign
        batch = worker_batch(rollouts, advantages.tolist(), None, sampler.tokenizer.pad_token_id)
        engine.eval()
        batch.extras["old_logp"] = score(engine, batch, 8)
        engine.train()
        policy_update(engine, batch, plan, seed=step)
        sampler.load_weights(model.state_dict(), step + 1)
    return means


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["advantage", "flipped-advantage"])
def test_mean_reward_moves_with_the_advantage_sign(tiny_model, sign):
    means = _train(str(tiny_model), sign)
    first, last = statistics.fmean(means[:4]), statistics.fmean(means[-4:])
    if sign > 0:
        assert last > first + 0.15, means  # learning: clearly more 'e'
    else:
        assert last < first, means  # the same update with a flipped sign unlearns it


def test_rollouts_pack_with_the_response_positions_marked(tiny_model):
    sampler = HFSampler(str(tiny_model))
    rollouts = sampler.generate([PromptInput("a", ({"role": "user", "content": "hi"},))],
                                SamplingSettings(n=3, max_new_tokens=5), seed=1)
    assert [r.sample for r in rollouts] == [0, 1, 2] and all(1 <= len(r.response_ids) <= 5 for r in rollouts)
    assert rollouts == sampler.generate([PromptInput("a", ({"role": "user", "content": "hi"},))],
                                        SamplingSettings(n=3, max_new_tokens=5), seed=1)  # seeded
    batch = pack(rollouts, pad_id=sampler.tokenizer.pad_token_id)
    for row, r in enumerate(rollouts):
        marked = batch.response_mask[row].nonzero().flatten().tolist()
        start = len(r.prompt_ids) - 1
        assert marked == list(range(start, start + len(r.response_ids)))
        assert batch.input_ids[row, start + 1 : start + 1 + len(r.response_ids)].tolist() == list(r.response_ids)
    logp = score(sampler.model, batch, micro_batch_size=2)
    assert logp.shape == batch.response_mask.shape and bool((logp[batch.response_mask.bool()] < 0).all())
    trimmed = select(batch, [0])
    assert trimmed.input_ids.shape[1] == len(rollouts[0].prompt_ids) + len(rollouts[0].response_ids)


def test_weights_pushed_to_the_sampler_change_what_it_samples(tiny_model):
    from transformers import AutoModelForCausalLM

    sampler = HFSampler(str(tiny_model))
    prompt = [PromptInput("a", ({"role": "user", "content": "hi"},))]
    before = sampler.generate(prompt, SamplingSettings(n=4, max_new_tokens=8), seed=3)
    other = AutoModelForCausalLM.from_pretrained(str(tiny_model))
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    assert sampler.load_weights(other.state_dict(), 7) == 7 and sampler.version == 7
    assert sampler.generate(prompt, SamplingSettings(n=4, max_new_tokens=8), seed=3) != before
    with pytest.raises(ValueError, match="do not fit"):
        sampler.load_weights({"nope.weight": torch.zeros(1)}, 8)
    # the same weights as a one-pass stream of (name, tensor) pairs (a broadcast being received)
    fresh = HFSampler(str(tiny_model))
    assert fresh.load_weights(((k, v) for k, v in other.state_dict().items()), 9) == 9
    assert fresh.generate(prompt, SamplingSettings(n=4, max_new_tokens=8), seed=3) == \
        sampler.generate(prompt, SamplingSettings(n=4, max_new_tokens=8), seed=3)
    name, tensor = next(iter(other.state_dict().items()))
    with pytest.raises(ValueError, match=f"do not fit the rollout model: {name} has shape"):
        fresh.load_weights({name: tensor[:1]}, 10)
    assert fresh.version == 9


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_packed_weights_round_trip_and_share_tied_tensors(tiny_model, dtype):
    from transformers import AutoModelForCausalLM

    from mnemoray.rl.weights import pack_weights, unpack_weights

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=dtype)
    state = model.state_dict()
    packed = pack_weights(state)
    assert len(packed.arrays) == len({t.data_ptr() for t in state.values()})  # tied tensors travel once
    assert packed.nbytes == sum(a.nbytes for a in packed.arrays)
    back = unpack_weights(packed)
    assert back.keys() == state.keys()
    for name, tensor in state.items():
        assert back[name].dtype == dtype and torch.equal(back[name], tensor), name
    sampler = HFSampler(str(tiny_model))
    assert sampler.load_weights(unpack_weights(pack_weights(model.float().state_dict())), 3) == 3


def test_on_policy_update_without_old_logprobs_matches_the_scored_one(tiny_model):
    from transformers import AutoModelForCausalLM

    sampler = HFSampler(str(tiny_model))
    rollouts = sampler.generate([PromptInput(f"p{i}", ({"role": "user", "content": f"q{i}"},)) for i in range(2)],
                                SamplingSettings(n=4, max_new_tokens=8), seed=0)
    rewards = [share_of_e(r.text) + 0.01 * r.sample for r in rollouts]
    advantages = group_advantages(rewards, [r.prompt_id for r in rollouts]).advantages.tolist()
    plan = UpdatePlan(minibatches=1, epochs=1, micro_batch_size=4)
    params = []
    for with_old in (True, False):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(str(tiny_model))
        engine = TorchEngine(model, torch.optim.AdamW(model.parameters(), lr=1e-3), grad_accum=2)
        batch = worker_batch(rollouts, advantages, None, sampler.tokenizer.pad_token_id)
        if with_old:
            engine.eval()
            batch.extras["old_logp"] = score(engine, batch, 4)
            engine.train()
        policy_update(engine, batch, plan, seed=1)
        params.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(params[0], params[1], atol=1e-6)
    with pytest.raises(ValueError, match="old_logp is needed"):
        policy_update(engine, worker_batch(rollouts, advantages, None, 0), UpdatePlan(epochs=2), seed=1)
