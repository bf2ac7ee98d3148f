"""The actor pool bounds of a job's `ray:` section (min_workers..workers) and `${data_root}`
from $MNEMORAY_DATA (a submitted job imports the package from Ray's copy of it)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mnemoray.config import ConfigError, RoleMemoRecallConfig, load_config
from repo_paths import REPO


def test_min_workers_defaults_to_one_and_may_not_exceed_workers():
    cfg = load_config(RoleMemoRecallConfig, REPO / "configs/eval/rolememo_local.yaml", ["ray.workers=4"])
    assert (cfg.ray.min_workers, cfg.ray.workers) == (1, 4)
    cfg = load_config(RoleMemoRecallConfig, REPO / "configs/eval/rolememo_local.yaml",
                      ["ray.workers=4", "ray.min_workers=4"])
    assert cfg.ray.min_workers == 4
    with pytest.raises(ConfigError, match=r"ray.min_workers \(3\) must not exceed ray.workers \(2\)"):
        load_config(RoleMemoRecallConfig, REPO / "configs/eval/rolememo_local.yaml",
                    ["ray.workers=2", "ray.min_workers=3"])


def test_data_root_follows_mnemoray_data(tmp_path):
    code = ("from mnemoray.config import load_config, RetrievalSuiteConfig\n"
            f"cfg = load_config(RetrievalSuiteConfig, {str(REPO / 'configs/eval/retrieval_local.yaml')!r}, [])\n"
            "print(cfg.runs[0].data)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"MNEMORAY_DATA": str(tmp_path), "PATH": ""})
    assert out.stdout.strip().startswith(str(tmp_path) + "/"), out.stdout
