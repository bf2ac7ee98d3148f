"""Rollout engines as Ray actors: prompts split over engines come back in prompt order and
match an in-process sampler; an engine that restarts after a crash (holding the initial
weights) is re-synced from the pushed copy before it samples, never sampling a stale policy."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from mnemoray.rl.rollout import HFSampler, PromptInput, SamplingSettings

pytestmark = pytest.mark.integration

PROMPTS = [PromptInput(f"p{i}", ({"role": "user", "content": f"hello {i}"},)) for i in range(3)]
SETTINGS = SamplingSettings(n=2, max_new_tokens=6)


def perturbed(model_path: Path) -> dict:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_path))
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    return model.state_dict()


def test_restarted_engine_is_resynced_before_sampling(ray_local, tiny_cache: Path):
    import ray

    from mnemoray.distributed.actors.rollout import StaleWeights, generate_split, push_weights, start_rollout_actors
    from mnemoray.distributed.placement import release
    from mnemoray.llm.tiny import ensure_tiny

    model_path = ensure_tiny(tiny_cache, arch="qwen2", seed=0)
    engines, group = start_rollout_actors(2, "hf", str(model_path), num_cpus=0.25, num_gpus=0, device="cpu",
                                          dtype="float32")
    try:
        state = perturbed(model_path)
        ref = push_weights(engines, state, version=1)
        first = generate_split(engines, PROMPTS, SETTINGS, seed=5, version=1, weights=ref)
        assert [r.id for r in first] == ["p0/0", "p0/1", "p1/0", "p1/1", "p2/0", "p2/1"]
        local = HFSampler(str(model_path))
        local.load_weights(state, 1)
        # engine 0 got p0 and p2 with seed 5, engine 1 got p1 with seed 1005
        assert [r.text for r in first if r.prompt_id != "p1"] == [
            r.text for r in local.generate([PROMPTS[0], PROMPTS[2]], SETTINGS, seed=5)]
        pid = ray.get(engines[0].pid.remote())
        os.kill(pid, signal.SIGKILL)  # crash: Ray restarts it with the initial weights
        assert ray.get(engines[0].version.remote()) == 0 and ray.get(engines[0].pid.remote()) != pid
        with pytest.raises(ray.exceptions.RayTaskError) as err:
            generate_split(engines, PROMPTS, SETTINGS, seed=5, version=1)  # no copy to re-sync from
        assert isinstance(err.value.cause, StaleWeights)
        again = generate_split(engines, PROMPTS, SETTINGS, seed=5, version=1, weights=ref)
        assert ray.get(engines[0].version.remote()) == 1
        assert [r.text for r in again] == [r.text for r in first]
    finally:
        for engine in engines:
            ray.kill(engine)
        release(group)


def test_broadcast_sync_delivers_the_weights_and_survives_engine_crashes(ray_local, tiny_cache: Path):
    """The gloo weight group: engines sample exactly as after an object-store push; a crashed
    engine between steps makes the next push rebuild the group; a crash in the middle of a
    broadcast sends that step through the object store; a restarted engine re-syncs lazily."""
    import ray

    from mnemoray.distributed.actors.rollout import generate_split, push_weights, start_rollout_actors
    from mnemoray.distributed.actors.weight_sync import BroadcastSync
    from mnemoray.distributed.placement import release
    from mnemoray.llm.tiny import ensure_tiny

    model_path = ensure_tiny(tiny_cache, arch="qwen2", seed=0)
    engines, group = start_rollout_actors(3, "hf", str(model_path), num_cpus=0.25, num_gpus=0, device="cpu",
                                          dtype="float32")
    sync = BroadcastSync(engines, device="cpu", bucket_mb=0.05, timeout_s=60)  # small buckets: several sends
    try:
        state = perturbed(model_path)
        push_weights(engines[2:], state, version=1)  # the reference: object store
        sync.push(state, version=1)
        assert sync.builds == 1 and sync.fallbacks == 0
        assert ray.get([e.version.remote() for e in engines]) == [1, 1, 1]
        assert ray.get([e.weight_group.remote() for e in engines[:2]]) == [sync.group.group_id] * 2
        texts = [[r.text for r in ray.get(e.generate.remote(PROMPTS, SETTINGS, 5, 1))] for e in engines]
        assert texts[0] == texts[1] == texts[2]

        def crash(engine) -> None:
            pid = ray.get(engine.pid.remote())
            os.kill(pid, signal.SIGKILL)
            assert ray.get(engine.pid.remote()) != pid  # restarted, out of the group, initial weights

        crash(engines[1])
        first_group = sync.group.group_id
        sync.push(state, version=2)
        assert sync.builds == 2 and sync.fallbacks == 0 and sync.group.group_id != first_group
        assert ray.get([e.version.remote() for e in engines]) == [2, 2, 2]

        # a crash after the group is checked and before the broadcast: that step falls back
        ensure = sync._ensure_group

        def ensure_then_crash():
            got = ensure()
            crash(engines[0])
            return got

        sync._ensure_group = ensure_then_crash
        sync.push(state, version=3)
        sync._ensure_group = ensure
        assert sync.fallbacks == 1
        assert ray.get([e.version.remote() for e in engines]) == [3, 3, 3]
        again = [[r.text for r in ray.get(e.generate.remote(PROMPTS, SETTINGS, 5, 3))] for e in engines]
        assert again == texts
        resync = sync.push(state, version=4)  # the next step builds a fresh group again
        assert sync.builds == 3 and sync.fallbacks == 1
        before = generate_split(engines, PROMPTS, SETTINGS, seed=5, version=4, weights=resync)

        # an engine that restarts after the push is re-synced from a copy made only then
        crash(engines[2])
        after = generate_split(engines, PROMPTS, SETTINGS, seed=5, version=4, weights=resync)
        assert ray.get(engines[2].version.remote()) == 4
        assert [r.text for r in after] == [r.text for r in before]
    finally:
        sync.close()
        for engine in engines:
            ray.kill(engine)
        release(group)
