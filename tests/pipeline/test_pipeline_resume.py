"""The pipeline killed mid-stage and rerun: finished stages are skipped, the killed one
resumes, the report is complete. A cheap config (tiny synthesis, one LoCoMo history for
the baselines, the training and serving stages disabled) keeps it short; the whole loop
is the opt-in `pipeline` test below."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from repo_paths import DATA, REPO

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
       "DS_ACCELERATOR": "cpu", "RAY_ADDRESS": ""}


def small_config(tmp_path: Path) -> Path:
    path = tmp_path / "pipeline_small.yaml"
    path.write_text(f"""
base: {REPO / 'configs/pipeline/local.yaml'}
ray: {{num_cpus: 2}}
disabled: [memory, sft, grpo, export, serve, eval_service]
synth:
  config: {REPO / 'configs/synth/rolememo_local.yaml'}
  overrides: [limit=1, target_tokens=500, insights.per_type=1, dialogue.rounds=2, distractors.pool_size=2,
              distractors.rounds=2, call.max_tokens=128]
baselines:
  config: {REPO / 'configs/eval/retrieval_local.yaml'}
  overrides: ['runs=[{{dataset: locomo, data: "{DATA / 'locomo'}"}}]', 'memories=[rag-bm25]', limit=1,
              ray.workers=1]
""")
    return path


def pipeline(config: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mnemoray", "pipeline", "run", "--config", str(config),
                             "--out", str(out)], cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def wait_for(proc: subprocess.Popen, ready) -> None:
    """Poll the output files while the process runs (waiting on the process, not sleeping)."""
    while not ready():
        try:
            proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            continue
        if not ready():
            pytest.fail(f"the pipeline ended (rc {proc.returncode}) before the kill point:\n{proc.stdout.read()}")


@pytest.mark.integration
def test_killed_mid_stage_then_rerun_skips_finished_stages_and_completes_the_report(tmp_path):
    config, out = small_config(tmp_path), tmp_path / "out"
    proc = pipeline(config, out)
    try:
        wait_for(proc, lambda: (out / "synth" / "_done.json").exists()
                 and (out / "baselines" / "_started.json").exists())
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started
        proc.wait()
    assert not (out / "baselines" / "_done.json").exists() and not (out / "report.md").exists()
    synth_marker = (out / "synth" / "_done.json").read_text()

    rerun = pipeline(config, out)
    output, _ = rerun.communicate()
    assert rerun.returncode == 0, output
    assert (out / "synth" / "_done.json").read_text() == synth_marker  # not run again
    stages = {s["stage"]: s for s in json.loads((out / "stages.json").read_text())}
    assert stages["synth"]["status"] == "skipped (done before)"
    assert stages["baselines"]["status"] == "ran"
    assert {stages[n]["status"] for n in ("memory", "sft", "grpo", "export", "serve", "eval_service")} == {"disabled"}
    report = (out / "report.md").read_text()
    assert "1 stages ran, 1 were done before and skipped, 0 failed, 6 did not run" in report
    for name in stages:
        assert f"| {name} | " in report
    assert "## Retrieval baselines" in report and "| locomo | rag-bm25 | retrieval |" in report
    assert (out / "baselines" / "run" / "comparison.md").exists()
