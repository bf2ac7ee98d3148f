"""`mnemoray serve memory` refuses a bad config or a missing admin key before Ray starts."""

from __future__ import annotations

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
