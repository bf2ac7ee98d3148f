"""The runtime envs in cluster/runtime_env/ (for `ray job submit --runtime-env FILE`) and in each
RayJob are valid for the installed Ray, their pip pins are exactly the lock files' (one source of
truth), and a submitted job's driver never asks Ray to set an env var its job already sets."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from ray.runtime_env import RuntimeEnv

from mnemoray.distributed.runtime import JOB_CONFIG_ENV, WORKER_ENV, worker_runtime_env
from repo_paths import REPO

ENVS = sorted((REPO / "cluster" / "runtime_env").glob("*.yaml"))
RAYJOBS = sorted((REPO / "cluster" / "kuberay").glob("rayjob-*.yaml"))
LOCKS = {"pip-cpu.yaml": "constraints/cpu.txt", "pip-gpu.yaml": "constraints/gpu.txt"}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)$")


def _pins(lines: list[str]) -> dict[str, str]:
    """name -> version of every `name==version` line; any other non-comment line is an error."""
    pins = {}
    for line in (raw.strip() for raw in lines):
        if not line or line.startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"not a pin: {line!r}"
        pins[match[1].lower().replace("_", "-")] = match[2]
    return pins


def _runtime_env(path: Path, monkeypatch) -> RuntimeEnv:
    monkeypatch.chdir(REPO)  # local paths (working_dir, py_modules, the lock) resolve from the repository root
    return RuntimeEnv(**yaml.safe_load(path.read_text()))


def test_there_is_one_env_for_installed_nodes_and_one_per_lock():
    assert {p.name for p in ENVS} == {"installed.yaml", *LOCKS}


@pytest.mark.parametrize("path", ENVS, ids=lambda p: p.name)
def test_each_runtime_env_is_valid_for_ray_and_ships_the_checkout(path: Path, monkeypatch):
    env = _runtime_env(path, monkeypatch)
    assert env.working_dir() == "."
    assert [Path(m) for m in env.py_modules()] == [Path("platform/mnemoray")]
    assert (REPO / "platform" / "mnemoray" / "__init__.py").is_file()
    assert env.env_vars() == yaml.safe_load((REPO / "cluster/runtime_env/installed.yaml").read_text())["env_vars"]
    assert set(env.env_vars()) <= set(WORKER_ENV), "an env var the workers do not otherwise get"


@pytest.mark.parametrize("name", sorted(LOCKS))
def test_the_pip_pins_are_the_lock_files(name: str, monkeypatch):
    env = _runtime_env(REPO / "cluster" / "runtime_env" / name, monkeypatch)
    raw = yaml.safe_load((REPO / "cluster" / "runtime_env" / name).read_text())
    assert raw["pip"]["packages"] == LOCKS[name], "name the lock file; a copied list drifts"
    lock = _pins((REPO / LOCKS[name]).read_text().splitlines())
    assert _pins(env.pip_config()["packages"]) == lock
    assert lock["ray"] == __import__("ray").__version__, "the cluster must run the client's Ray"
    assert env.pip_config()["pip_check"] is False


def test_rays_validation_is_not_vacuous(monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(ValueError, match="can only have these fields"):
        RuntimeEnv(pip={"packagez": "constraints/cpu.txt"})
    with pytest.raises(ValueError, match="is not a valid file"):
        RuntimeEnv(pip={"packages": "constraints/missing.txt"})
    assert _pins(["a==1", "# c", ""]) == {"a": "1"}
    with pytest.raises(AssertionError, match="not a pin"):
        _pins(["torch>=2"])


@pytest.mark.parametrize("path", RAYJOBS, ids=lambda p: p.name)
def test_each_rayjob_runtime_env_is_valid_and_sets_the_same_env_vars(path: Path):
    [doc] = [d for d in yaml.safe_load_all(path.read_text()) if d]
    raw = yaml.safe_load(doc["spec"]["runtimeEnvYAML"])
    env = RuntimeEnv(**{k: v for k, v in raw.items() if k != "working_dir"})  # the image's path, not here
    assert env.env_vars() == yaml.safe_load((REPO / "cluster/runtime_env/installed.yaml").read_text())["env_vars"]


def test_a_submitted_jobs_driver_leaves_the_jobs_env_vars_to_the_job():
    job = {JOB_CONFIG_ENV: json.dumps({"runtime_env": {"env_vars": {"HF_HUB_OFFLINE": "0", "OTHER": "x"}}})}
    env_vars = worker_runtime_env(job)["env_vars"]
    assert "HF_HUB_OFFLINE" not in env_vars and env_vars == {k: v for k, v in WORKER_ENV.items()
                                                              if k != "HF_HUB_OFFLINE"}
    assert worker_runtime_env({})["env_vars"] == WORKER_ENV
    assert worker_runtime_env({JOB_CONFIG_ENV: "not json"})["env_vars"] == WORKER_ENV
