"""Pinned installs: the lock files pin every declared dependency at a version that satisfies
pyproject.toml, the environment scripts/setup.sh built holds exactly the pinned versions, and
both Docker images install through the same scripts/install.sh line with the same pins.
Refresh the locks with `bash scripts/lock.sh` after changing dependencies."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from repo_paths import REPO

LOCKS = {"cpu": REPO / "constraints" / "cpu.txt", "gpu": REPO / "constraints" / "gpu.txt"}
DOCKERFILES = {"cpu": REPO / "docker" / "Dockerfile.cpu", "gpu": REPO / "docker" / "Dockerfile.gpu"}
REFRESH = "refresh with `bash scripts/lock.sh`"


def read_lock(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        assert match, f"{path.name}:{n}: {line!r} is not NAME==VERSION"
        name = canonicalize_name(match[1])
        assert name not in pins, f"{path.name}:{n}: {name} pinned twice"
        pins[name] = match[2]
    return pins


def _requirements(*extras: str) -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += project["optional-dependencies"][extra]
    return [Requirement(r) for r in reqs]


@pytest.mark.parametrize(("lock", "extras"), [("cpu", ("dev",)), ("gpu", ("dev", "gpu"))])
def test_the_lock_pins_every_declared_dependency_within_its_specifier(lock: str, extras: tuple[str, ...]):
    pins = read_lock(LOCKS[lock])
    assert "mnemoray" not in pins, "the lock must not pin the project itself"
    for req in _requirements(*extras):
        name = canonicalize_name(req.name)
        assert name in pins, f"{LOCKS[lock].name} does not pin {req.name} (declared in pyproject.toml); {REFRESH}"
        assert req.specifier.contains(Version(pins[name]), prereleases=True), (
            f"{LOCKS[lock].name} pins {name}=={pins[name]}, outside pyproject.toml's {req}; {REFRESH}")


def test_both_stacks_share_torch_and_ray():
    cpu, gpu = read_lock(LOCKS["cpu"]), read_lock(LOCKS["gpu"])
    for name in ("torch", "ray", "deepspeed", "pyarrow", "pydantic"):
        assert cpu[name] == gpu[name], f"{name}: cpu.txt {cpu[name]} vs gpu.txt {gpu[name]}"
    assert "vllm" in gpu and "vllm" not in cpu


def test_the_environment_setup_built_holds_the_pinned_versions():
    """What scripts/setup.sh installed (the interpreter running this suite) is the locked set."""
    pins = read_lock(LOCKS["cpu"])
    wrong = []
    for dist in md.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        if name in pins and Version(dist.version).public != Version(pins[name]).public:
            wrong.append(f"{name} {dist.version} (lock {pins[name]})")
    assert not wrong, f"installed versions differ from constraints/cpu.txt: {wrong}; rerun bash scripts/setup.sh"
    missing = [n for n in pins if n not in ("setuptools", "pip") and not _installed(n)]
    assert not missing, f"locked but not installed: {missing}"


def _installed(name: str) -> bool:
    try:
        md.version(name)
    except md.PackageNotFoundError:
        return False
    return True


def _install_lines(text: str) -> list[list[str]]:
    """The arguments of every `bash scripts/install.sh ...` command in a shell script or Dockerfile."""
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    text = re.sub(r"\\\n", " ", text)
    return [shlex.split(m[1], comments=True) for m in re.finditer(r"bash scripts/install\.sh([^\n&;|]*)", text)]


def test_setup_and_both_images_install_through_the_one_script():
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert _install_lines(setup) == [["$LOCK", "dev", "--editable"]]
    assert 'LOCK="${MNEMORAY_LOCK:-constraints/cpu.txt}"' in setup
    for stack, dockerfile in DOCKERFILES.items():
        text = dockerfile.read_text()
        calls = _install_lines(text)
        assert len(calls) == 1, f"{dockerfile.name}: expected one scripts/install.sh line, found {calls}"
        assert calls[0][0] == f"constraints/{stack}.txt", f"{dockerfile.name} installs from {calls[0][0]}"
        assert "pip install" not in text, f"{dockerfile.name} installs packages outside scripts/install.sh"
        assert "COPY constraints/ constraints/" in text and "COPY scripts/install.sh scripts/install.sh" in text
    assert "pip install" not in setup, "setup.sh installs packages outside scripts/install.sh"


def test_the_cpu_images_install_line_resolves_to_exactly_the_locked_set(tmp_path):
    """Resolve (pip --dry-run) what docker/Dockerfile.cpu's install line installs."""
    [argv] = _install_lines(DOCKERFILES["cpu"].read_text())
    report = tmp_path / "report.json"
    proc = subprocess.run(["bash", "scripts/install.sh", *argv], cwd=REPO, capture_output=True, text=True,
                          env={**_env(), "PYTHON": sys.executable, "MNEMORAY_PIP_REPORT": str(report)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    resolved = {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"]
                for i in json.loads(report.read_text())["install"]}
    assert resolved.pop("mnemoray") == md.version("mnemoray")
    pins = read_lock(LOCKS["cpu"])
    unpinned = sorted(set(resolved) - set(pins))
    assert not unpinned, f"the CPU image would install packages the lock does not pin: {unpinned}; {REFRESH}"
    off = {n: (v, pins[n]) for n, v in resolved.items() if Version(v).public != Version(pins[n]).public}
    assert not off, f"resolved vs pinned: {off}"
    assert {"torch", "ray", "deepspeed", "transformers"} <= set(resolved)


def test_install_refuses_a_missing_lock():
    proc = subprocess.run(["bash", "scripts/install.sh", "constraints/nope.txt"], cwd=REPO,
                          capture_output=True, text=True, env={**_env(), "PYTHON": sys.executable})
    assert proc.returncode == 2 and "constraints/nope.txt not found" in proc.stderr


def _env() -> dict[str, str]:
    return dict(os.environ)
