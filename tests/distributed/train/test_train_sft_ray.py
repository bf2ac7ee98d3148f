"""SFT end to end on a real local Ray: Ray Train V2 workers, DeepSpeed ZeRO-2 on CPU, Ray Data shards.

One module-scoped Ray; each test trains the tiny model on the copy task for a few dozen
steps (tiny sequences), so the whole module stays short on a 2-core machine.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from mnemoray.config import load_config
from mnemoray.config.train import SFTConfig
from mnemoray.llm.types import ChatRequest
from mnemoray.train.demo import copy_task
from mnemoray.train.plot import read_metrics

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


BAD_LINES = [
    "{not json",
    json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]}),
    json.dumps({"messages": [{"role": "user", "content": "say red many times"},
                             {"role": "assistant", "content": "red " * 80}]}),  # truncated to max_length
    json.dumps({"messages": [{"role": "system", "content": "x " * 200}, {"role": "user", "content": "q"},
                             {"role": "assistant", "content": "a"}]}),  # no answer left after truncation
]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sft-data") / "copy.jsonl"
    lines = [json.dumps(r) for r in copy_task(160, seed=1)]
    for i, bad in enumerate(BAD_LINES):
        lines.insert(10 + 30 * i, bad)
    path.write_text("\n".join(lines) + "\n")
    return path


def _cfg(tmp_path: Path, tiny_cache: Path, data_file: Path, name: str, *overrides: str) -> SFTConfig:
    return load_config(SFTConfig, "configs/train/sft_local.yaml", [
        f"name={name}", f"out={tmp_path}", f"model.tiny_cache_dir={tiny_cache}",
        f"data.train=[{{path: {data_file}}}]", "data.max_length=48", "data.eval_fraction=0.15",
        "schedule.max_steps=24", "schedule.save_every=8", "schedule.eval_every=8", "schedule.keep=2",
        *overrides,
    ])


def test_two_workers_learn_export_and_resume(ray_local, tmp_path: Path, tiny_cache: Path, data_file: Path):
    from mnemoray.distributed.train.sft import run_sft
    from mnemoray.llm.hf_engine import HFEngine
    from mnemoray.llm.types import ChatMessage, ChatRequest, SamplingParams

    cfg = _cfg(tmp_path, tiny_cache, data_file, "learn")
    result = run_sft(cfg)
    assert result.error is None
    run = tmp_path / "learn"
    rows = read_metrics(run / "metrics.jsonl")
    evals = [r["eval_loss"] for r in rows if r.get("eval_loss") is not None]
    assert rows[0]["step"] == 0 and len(evals) == 4  # steps 0, 8, 16, 24
    assert evals[-1] < 0.7 * evals[0], evals
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == list(range(1, 25))
    assert all(r["tokens_per_s"] > 0 and r["lr"] > 0 for r in rows if "loss" in r)
    assert (run / "loss.png").stat().st_size > 1000

    # bad input was counted with reasons, never a crash
    stats = json.loads((run / "data_stats.json").read_text())
    assert stats["rejected"]["by_reason"] == {"invalid JSON": 1, "empty assistant turn": 1,
                                              "no assistant tokens within max_length": 1}
    assert stats["truncated_samples"] == 1
    assert stats["samples"]["train"] + stats["samples"]["eval"] == 160 + 2

    # checkpoints: every 8 steps, only the last 2 kept
    ckpts = sorted(p.name for p in (cfg.storage / "learn").glob("step_*"))
    assert ckpts == ["step_00000016", "step_00000024"]

    # the export is an ordinary HF checkpoint with tokenizer and chat template, and it generates
    export = result.export_dir
    assert export == run / "hf"
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(export)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    trained = AutoModelForCausalLM.from_pretrained(export)
    start = AutoModelForCausalLM.from_pretrained(cfg.resolve_model_path())
    assert not torch.equal(trained.model.embed_tokens.weight, start.model.embed_tokens.weight)
    engine = HFEngine(str(export), device="cpu")
    req = ChatRequest(messages=[ChatMessage(role="user", content="copy: red tea")],
                      params=SamplingParams(max_tokens=8))
    out = engine.generate([req])[0]
    assert out.error is None and out.usage.completion_tokens > 0
    _generates_through_serve(export, req)

    # a rerun with the same name resumes from the latest checkpoint instead of starting over
    more = run_sft(_cfg(tmp_path, tiny_cache, data_file, "learn", "schedule.max_steps=32"))
    assert more.error is None and more.metrics["step"] == 32
    events = [json.loads(ln) for ln in (run / "events.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "start"] == [0, 24]
    steps = [r["step"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r]
    assert steps == list(range(1, 33))


def test_killed_worker_restarts_from_last_checkpoint(ray_local, tmp_path: Path, tiny_cache: Path, data_file: Path):
    from mnemoray.distributed.train.sft import run_sft

    cfg = _cfg(tmp_path, tiny_cache, data_file, "killed", "schedule.max_steps=120", "schedule.save_every=6",
               "schedule.eval_every=0", "ray.max_failures=1")
    events = tmp_path / "killed" / "events.jsonl"
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(result=run_sft(cfg)), daemon=True)
    thread.start()
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and thread.is_alive() and time.monotonic() < deadline:
        if events.exists():
            evs = [json.loads(ln) for ln in events.read_text().splitlines() if ln.strip()]
            # kill right after a checkpoint, well within Ray Train's 2 s poll that registers it
            ckpt = [e for e in evs if e["event"] == "checkpoint"]
            if ckpt:
                killed = ckpt[-1]
                os.kill(killed["pid"], signal.SIGKILL)  # the rank-0 worker process dies mid-run
        time.sleep(0.02)
    thread.join(timeout=300)
    assert killed is not None, "training ended before a checkpoint was seen"
    result = box["result"]
    assert result.error is None and result.metrics["step"] == 120
    evs = [json.loads(ln) for ln in events.read_text().splitlines()]
    starts = [e for e in evs if e["event"] == "start"]
    assert len(starts) == 2
    assert starts[0]["step"] == 0
    # restored from the checkpoint saved just before the kill, registered by Ray or not
    assert starts[1]["step"] == killed["step"] > 0 and starts[1]["pid"] != killed["pid"]
    # steps continue after the restart; records past the restored checkpoint were replaced, not duplicated
    steps = [r["step"] for r in read_metrics(tmp_path / "killed" / "metrics.jsonl") if "loss" in r]
    assert steps == list(range(1, 121))
    assert (tmp_path / "killed" / "hf" / "model.safetensors").exists()
    # a checkpoint adopted after the restart is pruned like any other: only the newest 2 remain
    assert sorted(p.name for p in (cfg.storage / "killed").glob("step_*")) == ["step_00000114", "step_00000120"]


def test_zero3_with_packing_exports_the_trained_weights(ray_local, tmp_path: Path, tiny_cache: Path,
                                                        data_file: Path):
    """ZeRO-3 shards every weight; the export must gather the trained values, not empty shards.

    Also the streaming shard path: batches come from the Ray Data iterator during the steps."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mnemoray.distributed.train.sft import run_sft
    from mnemoray.train.formats import read_samples
    from mnemoray.train.tokenize import collate, encode_chat

    cfg = _cfg(tmp_path, tiny_cache, data_file, "zero3", "deepspeed.zero_stage=3", "data.packing=true",
               "data.shard=stream",  # the other tests hold their shard in memory (sft_local.yaml)
               "data.max_length=96", "schedule.micro_batch_size=2", "schedule.max_steps=8",
               "schedule.eval_every=0")
    result = run_sft(cfg)
    assert result.error is None and result.metrics["step"] == 8
    assert result.data.rows["train"] < result.data.samples["train"]  # several samples per packed row
    final_eval = [r for r in read_metrics(tmp_path / "zero3" / "metrics.jsonl") if r.get("eval_loss")][-1]
    assert final_eval["step"] == 8

    tok = AutoTokenizer.from_pretrained(result.export_dir)
    model = AutoModelForCausalLM.from_pretrained(result.export_dir).eval()
    samples = read_samples(data_file)[:48]
    enc = [encode_chat(tok, s["messages"], 48) for s in samples]
    batch = collate({"input_ids": [e.input_ids for e in enc], "labels": [e.labels for e in enc]}, tok.pad_token_id)
    with torch.no_grad():
        loss = float(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           labels=batch["labels"]).loss)
    # the exported model scores like the model at the end of training (random weights score ~7.4)
    assert abs(loss - final_eval["eval_loss"]) < 0.5, (loss, final_eval)


def test_bf16_gradient_checkpointing_and_offload_on_zero3(ray_local, tmp_path: Path, tiny_cache: Path,
                                                         data_file: Path):
    """The memory-saving options a big model needs, run for real on CPU: the engine reports
    what it actually runs, the model still learns, and the export holds bf16 weights."""
    from transformers import AutoModelForCausalLM

    from mnemoray.distributed.train.sft import run_sft

    cfg = _cfg(tmp_path, tiny_cache, data_file, "lowmem", "deepspeed.zero_stage=3", "deepspeed.dtype=bf16",
               "deepspeed.offload_optimizer=cpu", "deepspeed.offload_param=cpu",
               "model.gradient_checkpointing=true", "schedule.max_steps=16", "schedule.eval_every=0")
    result = run_sft(cfg)
    assert result.error is None and result.metrics["step"] == 16
    start = json.loads((tmp_path / "lowmem" / "events.jsonl").read_text().splitlines()[0])
    assert start["engine"] == {"zero_stage": 3, "param_dtype": "bfloat16", "gradient_checkpointing": True,
                               "optimizer": "DeepSpeedZeroOptimizer_Stage3", "offload_optimizer": True,
                               "offload_param": True, "backward_allreduce": True}
    evals = [r["eval_loss"] for r in read_metrics(tmp_path / "lowmem" / "metrics.jsonl") if "eval_loss" in r]
    assert len(evals) == 2 and evals[-1] < 0.8 * evals[0], evals
    model = AutoModelForCausalLM.from_pretrained(result.export_dir)
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16


def _generates_through_serve(export: Path, req: ChatRequest) -> None:
    """The export behind the OpenAI-compatible Serve endpoint, called with OpenAIEngine."""
    from ray import serve

    from mnemoray.distributed.serve.llm_app import LLMAppConfig, run_llm_app
    from mnemoray.llm.openai_engine import OpenAIEngine
    from mnemoray.ports import free_port

    url = run_llm_app(LLMAppConfig(model=str(export), model_id="sft-export"), port=free_port())
    try:
        with OpenAIEngine(model="sft-export", base_url=url, max_retries=1) as client:
            served = client.generate([req])[0]
        assert served.error is None and served.usage.completion_tokens > 0
    finally:
        serve.shutdown()
