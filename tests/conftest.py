"""Shared fixtures for the whole suite: the shared public data, a real embedder, the tiny
model (built once per session) and engines on it, one local Ray per test module, the fault
endpoint, and the control-flow stand-ins of `fakes.py`. Every test that starts Ray or runs a
CLI end to end is marked `integration`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from fakes import ListMemory, ScriptedEngine
from repo_paths import DATA, REPO
from sample_data import write_rolememo_dataset

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
# One embedding store per test session (the suite embeds the shared samples once; nothing
# lands in the user's ~/.cache). Set before any Ray worker or CLI process starts: they inherit it.
os.environ.setdefault("MNEMORAY_EMBEDDING_CACHE", tempfile.mkdtemp(prefix="mnemoray-embeddings-"))

TINY_LLM = REPO / "configs" / "llm" / "tiny_local.yaml"


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not DATA.is_dir():
        pytest.fail(f"shared data not found at {DATA}; set MNEMORAY_DATA")
    return DATA


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models on a shared 2-core box: extra torch threads only spin against each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _ray_only_in_integration_tests(request, monkeypatch):
    """A test that starts Ray in this process must be marked `integration` (the quick lane,
    `-m "not integration"`, never waits for Ray)."""
    if request.node.get_closest_marker("integration") is None:
        import ray

        def refuse(*_, **__):
            raise AssertionError(f"{request.node.nodeid} starts Ray: mark it (or its module) integration")

        monkeypatch.setattr(ray, "init", refuse)
    yield


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny-model cache folder, filled once (the way `tiny:` configs use it)."""
    from mnemoray.llm.tiny import ensure_tiny

    cache = tmp_path_factory.mktemp("tiny-cache")
    ensure_tiny(cache, arch="qwen2", seed=0)
    return cache


@pytest.fixture(scope="session")
def tiny_model(tiny_cache: Path) -> Path:
    """The tiny random qwen2 (seed 0) as a checkpoint folder, loaded by path like any model."""
    from mnemoray.llm.tiny import ensure_tiny

    return ensure_tiny(tiny_cache, arch="qwen2", seed=0)


@pytest.fixture(scope="session")
def engine(tiny_model: Path):
    """An `hf` engine on the tiny model."""
    from mnemoray.llm.hf_engine import HFEngine

    return HFEngine(str(tiny_model), batch_size=4)


@pytest.fixture(scope="session")
def tokenizer(tiny_model: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(scope="module")
def tiny_llm(tiny_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped tiny engine config, built in the session's tiny-model cache folder."""
    path = tmp_path_factory.mktemp("llm") / "tiny.yaml"
    path.write_text(TINY_LLM.read_text() + f"\ntiny_cache_dir: {tiny_cache}\n")
    return path


@pytest.fixture(scope="session")
def embedder():
    from mnemoray.index.embedder import Embedder

    return Embedder()


@pytest.fixture(scope="module")
def ray_local():
    """One real local Ray per test module (starting Ray costs seconds)."""
    import ray

    from mnemoray.distributed.runtime import WORKER_ENV

    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True,
             runtime_env={"env_vars": {**WORKER_ENV, "DS_ACCELERATOR": "cpu"}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def rolememo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A RoleMemo-format run folder written by hand (sample_data.py)."""
    return write_rolememo_dataset(tmp_path_factory.mktemp("rolememo") / "run")


@pytest.fixture
def scripted_engine() -> type[ScriptedEngine]:
    """The scripted-engine class: `scripted_engine(lambda request: reply)`."""
    return ScriptedEngine


@pytest.fixture
def scripted():
    """A scripted engine from `script(call, request)`, `call` being the name a memory framework
    tags its request with (memory-framework tests script by call)."""
    return lambda script: ScriptedEngine(lambda request: script(request.metadata.get("call", ""), request))


@pytest.fixture
def list_memory() -> type[ListMemory]:
    """The list-memory class (also usable as a memory factory)."""
    return ListMemory


@pytest.fixture
def fault_server():
    """Factory: `fault_server(FaultConfig(...))` -> started server, stopped after the test."""
    from mnemoray.llm.fault_server import FaultConfig, FaultServer

    started: list[FaultServer] = []

    def start(config: FaultConfig | None = None) -> FaultServer:
        server = FaultServer(config or FaultConfig())
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@contextlib.contextmanager
def _serve_llm_cli(args: list[str], log: Path, wait_s: int = 300, until_log: str | None = None):
    """`mnemoray serve llm ARGS` in its own process, as a user starts it; yields the `/v1`
    base URL once `/v1/models` answers (or, with `until_log`, as soon as its log shows that
    text: a moment inside start-up), then stops it with SIGTERM (as a job runner does) and
    checks it exits 0. Failures show the end of its log."""
    from mnemoray.ports import free_port

    port = free_port()
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mnemoray", "serve", "llm", "--port", str(port), *args],
                                cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env={**os.environ})
        base = f"http://127.0.0.1:{port}/v1"
        try:
            for _ in range(wait_s * 10):  # bounded: Ray, Serve and the model starting
                assert proc.poll() is None, log.read_text()[-3000:]
                if until_log is not None:
                    if until_log in log.read_text():
                        break
                    time.sleep(0.1)
                    continue
                try:
                    json.loads(urllib.request.urlopen(f"{base}/models", timeout=5).read())
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                raise AssertionError(f"{base} not ready: " + log.read_text()[-3000:])
            yield base
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
    assert proc.returncode == 0, log.read_text()[-3000:]


@pytest.fixture
def serve_llm_cli():
    """The context manager above: `with serve_llm_cli(["--model", DIR], tmp_path / "log") as url:`."""
    return _serve_llm_cli
