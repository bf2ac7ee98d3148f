"""`mnemoray serve memory` as a user runs it (its own process and local Ray): sessions in
flight when the whole app is SIGKILLed, a restart on the same data folder, and every
acknowledged write is there exactly once; SIGTERM then stops it with exit 0."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from mnemoray.client import MemoryClient, MemoryServiceError
from mnemoray.ports import free_port
from repo_paths import REPO

pytestmark = pytest.mark.integration

ADMIN = "admin-key-durability-0123456789"
N = 20


def _start(config: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    out = log.open("a")
    proc = subprocess.Popen([sys.executable, "-m", "mnemoray", "serve", "memory", "--config", str(config),
                             "--port", str(port)], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ})
    url = f"http://127.0.0.1:{port}"
    for _ in range(3000):  # bounded: Ray, Serve and the embedder starting
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=5).read()
            return proc, url
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} not ready: " + log.read_text()[-3000:])


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the CLI and every process it started (Ray's included), all at once."""
    tree = [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))]
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=60)
    psutil.wait_procs([p for p in (psutil.Process(pid) for pid in tree[1:] if psutil.pid_exists(pid))], timeout=60)


def _session(i: int) -> list[dict[str, str]]:
    return [{"speaker": "user", "text": f"Fact number {i}: my locker code is {1000 + 37 * i}."},
            {"speaker": "assistant", "text": f"Noted, locker code {1000 + 37 * i}."}]


def test_acknowledged_writes_survive_sigkill_of_the_whole_app(tmp_path):
    (tmp_path / "admin.key").write_text(ADMIN)
    config = tmp_path / "memory.yaml"
    config.write_text(f"data_dir: {tmp_path / 'data'}\nadmin_key_file: {tmp_path / 'admin.key'}\n"
                      "retry_interval_s: 0.5\nmemory: {name: rag-hybrid}\n")
    log = tmp_path / "serve.log"
    proc, url = _start(config, log)
    try:
        req = urllib.request.Request(f"{url}/v1/admin/tenants", data=json.dumps({"tenant": "t"}).encode(),
                                     method="POST", headers={"Authorization": f"Bearer {ADMIN}"})
        key = json.loads(urllib.request.urlopen(req, timeout=60).read())["api_key"]
        client = MemoryClient(url, key, timeout_s=120)
        acked: list[int] = []
        enough = threading.Event()

        def add(i: int) -> None:
            try:
                out = client.add(_session(i), session_id=f"s{i}", date="7 May 2024")
            except (OSError, MemoryServiceError):
                return  # cut off by the kill: not acknowledged
            acked.append(i)
            assert out["status"] in ("done", "pending")
            if len(acked) >= 5:
                enough.set()

        with ThreadPoolExecutor(N) as pool:
            futures = [pool.submit(add, i) for i in range(N)]
            assert enough.wait(300), log.read_text()[-3000:]
            _kill_tree(proc)
            for f in futures:
                f.result()
    finally:
        if proc.poll() is None:
            _kill_tree(proc)

    proc, url = _start(config, log)
    try:
        client = MemoryClient(url, key, timeout_s=120)
        for i in acked:  # every acknowledged session is applied (pending ones by the retry loop)
            for _ in range(600):
                if client.session(f"s{i}")["status"] == "done":
                    break
                time.sleep(0.1)
            assert client.session(f"s{i}")["status"] == "done"
        items = client.get_all()
        texts = [it["text"] for it in items]
        assert len(texts) == len(set(texts))  # no duplicates
        for i in acked:
            assert any(f"locker code is {1000 + 37 * i}." in t for t in texts), i
        again = [client.add(_session(i), session_id=f"s{i}", date="7 May 2024") for i in range(N)]
        assert all(a["status"] == "done" for a in again)
        assert all(a["duplicate"] for i, a in enumerate(again) if i in acked)
        assert len(client.get_all()) == N  # one pair chunk per session, each once
        assert "locker code is 1000." in client.search("locker code 1000", 1)[0]["text"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    assert proc.returncode == 0, log.read_text()[-3000:]
