"""`mnemoray serve memory` refuses a bad config or a missing admin key before Ray starts."""

from __future__ import annotations

from importlib.util import find_spec

import pytest
from typer.testing import CliRunner

from mnemoray.cli.main import app
from repo_paths import REPO


def test_missing_admin_key_is_refused_naming_where_it_is_read(monkeypatch):
    monkeypatch.delenv("MNEMORAY_ADMIN_KEY", raising=False)
    result = CliRunner().invoke(app, ["serve", "memory", "--config", str(REPO / "configs/serve/memory_local.yaml")])
    assert result.exit_code != 0
    assert "MNEMORAY_ADMIN_KEY" in result.output


def test_bad_config_keys_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("MNEMORAY_ADMIN_KEY", "x" * 20)
    bad = tmp_path / "memory.yaml"
    bad.write_text("memory: {name: nosuch}\nmax_body_bytes: 1\nstore: {num_replicas: 0}\n")
    result = CliRunner().invoke(app, ["serve", "memory", "--config", str(bad)])
    assert result.exit_code != 0
    for key in ("memory.name", "max_body_bytes", "store.num_replicas"):
        assert key in result.output, result.output


def _ray_serve_llm_service(tmp_path, engine_yaml: str):
    (tmp_path / "llm.yaml").write_text(engine_yaml)
    cfg = tmp_path / "memory.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\nllm: {tmp_path / 'llm.yaml'}\nmodel: {{serving: ray_serve_llm}}\n")
    return cfg


def test_ray_serve_llm_serving_of_a_non_vllm_engine_is_refused_before_ray_starts(tmp_path, monkeypatch):
    monkeypatch.setenv("MNEMORAY_ADMIN_KEY", "x" * 20)
    cfg = _ray_serve_llm_service(tmp_path, "engine: openai\nmodel: m\nbase_url: http://127.0.0.1:9/v1\n")
    result = CliRunner().invoke(app, ["serve", "memory", "--config", str(cfg)])
    assert result.exit_code != 0
    assert "ray_serve_llm" in result.output and "'openai'" in result.output and "llm.yaml" in result.output


@pytest.mark.skipif(find_spec("vllm") is not None, reason="vllm is installed here")
def test_ray_serve_llm_serving_without_vllm_is_refused_naming_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("MNEMORAY_ADMIN_KEY", "x" * 20)
    cfg = _ray_serve_llm_service(tmp_path, "engine: vllm\nmodel: /models/m\n")
    result = CliRunner().invoke(app, ["serve", "memory", "--config", str(cfg)])
    assert result.exit_code != 0
    assert "'vllm' package" in result.output, result.output
