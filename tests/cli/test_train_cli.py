"""`mnemoray train` commands: bad input gives one-line errors (exit 2); convert and demo-data write files."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from mnemoray.cli.main import app

runner = CliRunner()


def test_sft_rejects_bad_config_before_starting_anything(tmp_path: Path):
    res = runner.invoke(app, ["train", "sft", "--config", "configs/train/sft_local.yaml", "--out", str(tmp_path),
                              "deepspeed.zero_stage=5"])
    assert res.exit_code == 2
    assert "deepspeed.zero_stage" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["train", "sft", "--config", str(tmp_path / "nope.yaml")])
    assert res.exit_code == 2 and "no such config file" in res.output
    res = runner.invoke(app, ["train", "sft", "--config", "configs/train/sft_local.yaml", "not-an-override"])
    assert res.exit_code == 2 and "must look like key=value" in res.output


def test_sft_missing_data_file_is_a_one_line_error(tmp_path: Path, tiny_cache: Path):
    data = tmp_path / "ok.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n')
    res = runner.invoke(app, ["train", "sft", "--config", "configs/train/sft_local.yaml", "--out", str(tmp_path),
                              f"model.tiny_cache_dir={tiny_cache}",
                              f"data.train=[{{path: {tmp_path / 'missing.jsonl'}}}]"])
    assert res.exit_code == 2, res.output
    assert "missing.jsonl: no such data file" in res.output
    res = runner.invoke(app, ["train", "sft", "--config", "configs/train/sft_local.yaml", "--out", str(tmp_path),
                              "model.tiny=null", f"model.path={tmp_path}", f"data.train=[{{path: {data}}}]"])
    assert res.exit_code == 2 and "not a Hugging Face checkpoint folder" in res.output


def test_demo_data_and_convert_to_llamafactory(tmp_path: Path):
    data = tmp_path / "copy.jsonl"
    res = runner.invoke(app, ["train", "demo-data", "--out", str(data), "--n", "5"])
    assert res.exit_code == 0 and len(data.read_text().splitlines()) == 5
    with data.open("a") as fh:
        fh.write("{broken\n")
    res = runner.invoke(app, ["train", "convert", str(data), "--out", str(tmp_path / "lf")])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["samples"] == 5 and summary["rejected"]["by_reason"] == {"invalid JSON": 1}
    assert len(json.loads((tmp_path / "lf" / "mnemoray_sft.json").read_text())) == 5
    res = runner.invoke(app, ["train", "convert", str(data), "--out", str(tmp_path / "lf"), "--format", "csv"])
    assert res.exit_code == 2 and "unknown --format 'csv'" in res.output


def test_grpo_bad_input_is_a_one_line_error_before_ray_starts(tmp_path: Path):
    import ray

    bad = tmp_path / "prompts.jsonl"
    bad.write_text('{"id": "a", "prompt": "fine"}\n{"id": "b", "prompt": [{"role": "robot", "content": "x"}]}\n')
    base = ["train", "grpo", "--config", "configs/train/grpo_local.yaml", "--out", str(tmp_path)]
    res = runner.invoke(app, [*base, f"environment.path={bad}"])
    assert res.exit_code == 2, res.output
    assert f"{bad}: record line 2: field 'prompt.0.role'" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, [*base, "--reward-fn", str(tmp_path / "missing.py:compute_score")])
    assert res.exit_code == 2 and "reward.reward" in res.output and "missing.py does not exist" in res.output
    res = runner.invoke(app, [*base, "rollout.n=3", "rollout.prompts_per_step=1"])  # 3 samples, 2 workers
    assert res.exit_code == 2 and "must split evenly" in res.output
    assert not ray.is_initialized()


def test_ray_job_entries_reject_bad_input_with_exit_2():
    import subprocess
    import sys

    from repo_paths import REPO

    for job, config, bad in (("train_sft.py", "sft_local.yaml", "deepspeed.zero_stage=9"),
                             ("train_grpo.py", "grpo_local.yaml", "reward.reward=nope")):
        proc = subprocess.run([sys.executable, str(REPO / "jobs" / job), "--config", f"configs/train/{config}", bad],
                              cwd=REPO, capture_output=True, text=True)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("error: ") and bad.split("=")[0] in proc.stderr
