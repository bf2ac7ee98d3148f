"""The KL reference next to a real DeepSpeed policy (CPU, one process, its own interpreter so
no process group outlives the test): under ZeRO-3 in bf16 it is partitioned as the policy
is, and before any update it gives exactly the policy's log-probs; the policy's weights
gathered for a push are the checkpoint's."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from mnemoray.train.ds_config import compute_dtype, reference_config

CHILD = r"""
import json, sys
import torch
from mnemoray.rl.sequences import Rollout, pack
from mnemoray.rl.update import score
from mnemoray.train.loop import build_ds_engine
from mnemoray.train.reference import build_reference

model_path, stage = sys.argv[1], int(sys.argv[2])
from mnemoray.config.train import SFTDeepSpeed, SFTOptim
from mnemoray.train.ds_config import deepspeed_config_for

ds = SFTDeepSpeed(zero_stage=stage, dtype="bf16", torch_adam=True,
                  extra={"zero_optimization": {"stage3_param_persistence_threshold": 0}})
conf = deepspeed_config_for(ds, SFTOptim(lr=1e-3), micro_batch_size=2, grad_accum=1, world_size=1)
policy = build_ds_engine(conf, model_path, "cpu", False, lambda s: 1.0)
reference = build_reference(conf, model_path, policy.device)
rollouts = [Rollout("p", i, (1, 2, 3, 4), tuple(range(5 + i, 12 + 2 * i)), "", True) for i in range(3)]
batch = pack(rollouts, pad_id=0).to(policy.device)
policy.eval()
a, b = score(policy, batch, 2), score(reference, batch, 2)
params = list(reference.parameters())
from pathlib import Path
from safetensors.torch import load_file
from mnemoray.train.export import full_state_dict, gather_groups
# what a weight push sends: gathered a few KB at a time (many groups), copied, ties kept
state = full_state_dict(policy, stage, 0, gather_bytes=16384)
groups = len(gather_groups(list(policy.module.parameters()), 16384))
saved = load_file(str(Path(model_path) / "model.safetensors"))
print(json.dumps({
    "equal": bool(torch.equal(a, b)), "scored": float(batch.response_mask.sum()),
    "nonzero": bool((a * batch.response_mask).abs().sum() > 0),
    "dtype": str(params[0].dtype), "zero3_managed": all(hasattr(p, "ds_id") for p in params),
    "local_numel": sum(p.numel() for p in params),
    "full_numel": sum(getattr(p, "ds_numel", p.numel()) for p in params),
    "requires_grad": any(p.requires_grad for p in params),
    "optimizer": type(getattr(reference, "optimizer", None)).__name__,
    "state_matches": all(torch.equal(state[k], v.to(torch.bfloat16)) for k, v in saved.items()),
    "gather_groups": groups, "state_keys": list(state) == list(policy.module.state_dict()),
    "tied_once": state["lm_head.weight"].data_ptr() == state["model.embed_tokens.weight"].data_ptr(),
}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_child(tmp_path: Path, model_path: Path, stage: int) -> dict:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
           "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script), str(model_path), str(stage)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_zero3_reference_is_partitioned_bf16_and_scores_as_the_policy(tmp_path: Path, tiny_model: Path):
    facts = _run_child(tmp_path, tiny_model, stage=3)
    assert facts["equal"] and facts["nonzero"] and facts["scored"] > 0
    assert facts["dtype"] == "torch.bfloat16"
    # partitions only (persistence threshold 0: no tensor is small enough to stay whole)
    assert facts["zero3_managed"] and facts["local_numel"] == 0 < facts["full_numel"]
    # DeepSpeed's parameter manager only, no optimizer states (the policy's is DeepSpeedZeroOptimizer_Stage3)
    assert not facts["requires_grad"] and facts["optimizer"] == "DeepSpeedZeRoOffload"
    # the policy's gathered weights, as a push sends them: the checkpoint's, the tied pair copied once
    assert facts["state_matches"] and facts["tied_once"] and facts["state_keys"] and facts["gather_groups"] > 3


def test_reference_config_keeps_the_layout_and_drops_the_optimizer():
    conf = {"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2, "train_batch_size": 64,
            "gradient_clipping": 1.0, "bf16": {"enabled": True}, "fp16": {"enabled": False},
            "zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu"},
                                  "offload_param": {"device": "cpu"}},
            "optimizer": {"type": "AdamW", "params": {"lr": 1e-6}}}
    ref = reference_config(conf)
    assert "optimizer" not in ref and "gradient_clipping" not in ref
    assert ref["zero_optimization"] == {"stage": 3, "offload_param": {"device": "cpu"}}
    assert ref["train_batch_size"] == 64 and ref["bf16"] == {"enabled": True}
    assert conf["zero_optimization"]["offload_optimizer"] == {"device": "cpu"}  # the policy's config is untouched
    assert compute_dtype(ref) == "bfloat16"
    assert compute_dtype({"fp16": {"enabled": True}}) == "float16" and compute_dtype({}) == "float32"
