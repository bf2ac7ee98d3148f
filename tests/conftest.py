"""Shared fixtures: paths to the shared public data, a real embedder, one local Ray per module, and
stand-ins (a scripted engine, a list memory) for control-flow tests of the evaluations."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mnemoray.llm.types import ChatResult
from mnemoray.records import MemoryItem, RetrievedItem

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MNEMORAY_DATA", REPO.parent / "shared" / "data"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny-model cache folder, filled once (the way `tiny:` configs use it)."""
    from mnemoray.llm.tiny import ensure_tiny

    cache = tmp_path_factory.mktemp("tiny-cache")
    ensure_tiny(cache, arch="qwen2", seed=0)
    return cache


@pytest.fixture(scope="session")
def embedder():
    from mnemoray.index.embedder import Embedder

    return Embedder()


@pytest.fixture(scope="module")
def ray_local():
    """One real local Ray per test module (starting Ray costs seconds)."""
    import ray

    from mnemoray.pipelines.ray_runtime import WORKER_ENV

    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, runtime_env={"env_vars": WORKER_ENV})
    yield ray
    ray.shutdown()


class ScriptedEngine:
    """Replies via `script(request) -> text`; records every request it saw."""

    name, model = "scripted", "scripted"

    def __init__(self, script):
        self.script, self.seen = script, []

    def generate(self, requests):
        self.seen.extend(requests)
        return [ChatResult(id=r.id, text=self.script(r)) for r in requests]


class ListMemory:
    """Every ingested session's first turn is one memory item; retrieval returns them in order and
    records how many sessions it had ingested by then (`seen_at`)."""

    def __init__(self):
        self.sessions, self.seen_at = [], []

    def ingest_many(self, sessions, persona=None):
        self.sessions.extend(sessions)

    def retrieve_many(self, queries, k):
        self.seen_at.append(len(self.sessions))
        items = [MemoryItem(id=s.id, text=s.turns[0].text, session_id=s.id, timestamp=s.timestamp)
                 for s in self.sessions]
        return [[RetrievedItem(item=it, score=1.0, rank=i) for i, it in enumerate(items[:k])] for _ in queries]


@pytest.fixture
def scripted_engine() -> type[ScriptedEngine]:
    """The scripted-engine class: `scripted_engine(lambda request: text)`."""
    return ScriptedEngine


@pytest.fixture
def list_memory() -> type[ListMemory]:
    """The list-memory class (also usable as a memory factory)."""
    return ListMemory


@contextlib.contextmanager
def _serve_llm_cli(args: list[str], log: Path, wait_s: int = 300, until_log: str | None = None):
    """`mnemoray serve llm ARGS` in its own process, as a user starts it; yields the `/v1`
    base URL once `/v1/models` answers (or, with `until_log`, as soon as its log shows that
    text: a moment inside start-up), then stops it with SIGTERM (as a job runner does) and
    checks it exits 0. Failures show the end of its log."""
    from mnemoray.serving.ports import free_port

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
