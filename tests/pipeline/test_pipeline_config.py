"""Pipeline configs: every stage's own config is built and validated before anything runs,
the wiring always wins over a stage file, bad input is named; no Ray."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mnemoray.cli.main import app
from mnemoray.config import ConfigError, load_config
from mnemoray.config.pipeline import PipelineConfig
from mnemoray.distributed.pipeline import build_graph, run_pipeline, stage_configs
from mnemoray.outputs import JOB_CONFIG_ENV, OutputError
from repo_paths import REPO

LOCAL = REPO / "configs/pipeline/local.yaml"


def test_local_config_wires_each_stage_to_the_one_before(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    c = stage_configs(load_config(PipelineConfig, LOCAL), tmp_path)
    root = tmp_path.resolve()
    assert c.synth.out == root / "synth" / "run"
    assert (c.memory.dataset, c.memory.data, c.memory.memory.name) == ("rolememo", root / "synth" / "run", "dualmem")
    assert [(s.path, s.format) for s in c.sft.data.train] == [(root / "memory/build/trajectories.jsonl", "trajectory")]
    assert c.grpo.model.path == str(root / "sft" / "sft" / "hf") and c.grpo.model.tiny is None
    assert (c.grpo.environment.name, c.grpo.environment.path) == ("dualmem", root / "memory" / "build")
    assert c.serve.memory.llm_call == c.memory.memory.llm_call  # the student answers with the teacher's settings
    assert (c.eval_service.dataset, c.eval_service.memory.name, c.eval_service.limit) == ("rolememo", "dualmem", 1)
    assert c.baselines.out == root / "baselines" / "run"
    assert build_graph(load_config(PipelineConfig, LOCAL), tmp_path).names == [
        "synth", "memory", "sft", "grpo", "export", "serve", "eval_service", "baselines"]


def test_cluster_config_states_only_what_differs(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = load_config(PipelineConfig, REPO / "configs/pipeline/cluster.yaml")
    c = stage_configs(cfg, tmp_path)
    assert cfg.ray.address == "auto" and c.sft.model.path and c.grpo.reward.reward == "persona-judge"
    assert str(c.memory.llm).endswith("vllm_cluster.yaml") and c.sft.ray.use_gpu


def test_a_change_in_a_stage_file_override_changes_its_hash_and_its_readers_only(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    before = build_graph(load_config(PipelineConfig, LOCAL), tmp_path).hashes()
    after = build_graph(load_config(PipelineConfig, LOCAL, ['grpo.reward="length-penalty"']), tmp_path).hashes()
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"grpo", "export", "serve", "eval_service"}


def test_a_bad_stage_setting_names_the_stage_file_and_key(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = load_config(PipelineConfig, LOCAL, ["sft.overrides=[schedule.max_steps=0]"])
    with pytest.raises(ConfigError, match="sft_local.yaml: key 'schedule.max_steps'"):
        stage_configs(cfg, tmp_path)
    with pytest.raises(ConfigError, match="key 'disabled'.*unknown stages \\['trian'\\]"):
        load_config(PipelineConfig, LOCAL, ["disabled=[trian]"])
    with pytest.raises(ConfigError, match="key 'grpo.environment'"):
        load_config(PipelineConfig, LOCAL, ["grpo.environment=nope"])


def test_a_relative_out_is_refused_inside_a_submitted_job_before_anything_runs(monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv(JOB_CONFIG_ENV, json.dumps({"metadata": {"job_submission_id": "raysubmit_1"}}))
    cfg = load_config(PipelineConfig, LOCAL, ["out=runs/pipeline/x"])
    with pytest.raises(OutputError, match="relative path, and this runs as the submitted Ray job raysubmit_1"):
        run_pipeline(cfg, config_file=str(LOCAL))


def test_cli_reports_bad_input_in_one_line(monkeypatch):
    monkeypatch.chdir(REPO)
    result = CliRunner().invoke(app, ["pipeline", "run", "--config", str(LOCAL), "grpo.environment=nope"])
    assert result.exit_code == 2
    assert "error:" in result.output and "grpo.environment" in result.output
    result = CliRunner().invoke(app, ["pipeline", "run", "--config", str(LOCAL), "--out", "ftp://x/y"])
    assert result.exit_code == 2 and "unsupported scheme 'ftp'" in result.output
