"""The whole loop with configs/pipeline/local.yaml (about 5 minutes on 2 cores): opt-in,
`MNEMORAY_FULL_PIPELINE=1 python -m pytest -m pipeline tests/pipeline`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from repo_paths import REPO

pytestmark = [
    pytest.mark.integration,
    pytest.mark.pipeline,
    pytest.mark.skipif(os.environ.get("MNEMORAY_FULL_PIPELINE") != "1",
                       reason="the whole loop takes ~5 min: set MNEMORAY_FULL_PIPELINE=1 (and -m pipeline)"),
]
STAGES = ["synth", "memory", "sft", "grpo", "export", "serve", "eval_service", "baselines"]


def run(out):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DS_ACCELERATOR": "cpu", "RAY_ADDRESS": ""}
    return subprocess.run([sys.executable, "-m", "mnemoray", "pipeline", "run", "--config",
                           str(REPO / "configs/pipeline/local.yaml"), "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True)


def test_every_stage_runs_then_a_rerun_skips_them_all(tmp_path):
    out = tmp_path / "out"
    first = run(out)
    assert first.returncode == 0, first.stdout + first.stderr
    stages = json.loads((out / "stages.json").read_text())
    assert [(s["stage"], s["status"]) for s in stages] == [(n, "ran") for n in STAGES]
    manifest = json.loads((out / "export" / "manifest.json").read_text())
    assert manifest["max_abs_weight_change_vs_sft"] > 0  # GRPO changed the SFT model it started from
    assert json.loads((out / "serve" / "check.json").read_text())["reply"]["model"] == "memory"
    metrics = json.loads((out / "eval_service" / "run" / "metrics.json").read_text())
    assert metrics["memory"] == "dualmem" and metrics["n_queries"] >= 1
    report = (out / "report.md").read_text()
    assert "tiny random model" in report and "## Retrieval baselines" in report

    second = run(out)
    assert second.returncode == 0, second.stdout + second.stderr
    stages = json.loads((out / "stages.json").read_text())
    assert {s["status"] for s in stages} == {"skipped (done before)"}
