"""A real two-node Ray cluster on this machine for the cluster lane: `ray start --head` and a
second `ray start --address` node, each with one CPU and its own custom resource, on free ports
and in their own temp dir, so other Ray instances on the machine are left alone. Torn down by
killing the process groups of the `ray start` commands run here (never `ray stop`, which
would stop every Ray of this user)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from mnemoray.ports import free_port

RAY = str(Path(sys.executable).with_name("ray"))
SERVE = str(Path(sys.executable).with_name("serve"))


@dataclass
class LocalCluster:
    temp_dir: Path
    gcs_port: int = field(default_factory=free_port)
    dashboard_port: int = field(default_factory=free_port)
    groups: list[int] = field(default_factory=list)
    token: str = field(default_factory=lambda: secrets.token_hex(24))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a client of this cluster (`ray job submit`, `serve deploy`)."""
        return {**self.auth(), "RAY_ADDRESS": self.dashboard, **extra}

    def auth(self) -> dict[str, str]:
        """Token authentication on, with this cluster's own token (not ~/.ray/auth_token)."""
        return {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}

    def start(self, node_env: dict[str, str] | None = None) -> None:
        """`ray start` returns once its node is up (the worker's once it joined the head)."""
        common = ["--num-cpus", "1", "--disable-usage-stats", "--node-ip-address", "127.0.0.1"]
        head = [RAY, "start", "--head", "--port", str(self.gcs_port), "--dashboard-host", "127.0.0.1",
                "--dashboard-port", str(self.dashboard_port), "--ray-client-server-port", str(free_port()),
                "--temp-dir", str(self.temp_dir), "--resources", json.dumps({"head_slot": 1}), *common]
        worker = [RAY, "start", "--address", self.address, "--resources", json.dumps({"worker_slot": 1}), *common]
        self._run_start("head", head, node_env)
        self._run_start("worker", worker, node_env)

    def _run_start(self, name: str, argv: list[str], node_env: dict[str, str] | None) -> None:
        argv = [*argv, "--dashboard-agent-listen-port", str(free_port()), "--metrics-export-port", str(free_port())]
        with open(self.temp_dir / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**self.auth(), **(node_env or {})}, cwd=self.temp_dir)
            self.groups.append(proc.pid)  # the node's daemons stay in this process group
            if proc.wait() != 0:
                raise RuntimeError(f"ray start ({name}) failed:\n{(self.temp_dir / f'{name}.log').read_text()}")

    def nodes(self) -> dict[str, str]:
        """node id -> its custom resource (head_slot / worker_slot), alive nodes (the state API)."""
        rows = self.get("/api/v0/nodes?detail=1")["data"]["result"]["result"]
        return {n["node_id"]: next(r for r in n["resources_total"] if r.endswith("_slot"))
                for n in rows if n["state"] == "ALIVE"}

    def get(self, path: str, token: bool = True) -> dict:
        headers = {"Authorization": f"Bearer {self.token}"} if token else {}
        with urllib.request.urlopen(urllib.request.Request(f"{self.dashboard}{path}", headers=headers)) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        """Kill the process groups of the nodes started here, worker first, then any Ray worker
        that left its group (found by this cluster's own temp dir in its command line)."""
        for group in reversed(self.groups):
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.groups.clear()
        for proc in Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and str(self.temp_dir).encode() in (proc / "cmdline").read_bytes():
                    os.kill(int(proc.name), signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass


def new_cluster() -> LocalCluster:
    return LocalCluster(Path(tempfile.mkdtemp(prefix="mnemoray-ray-", dir="/tmp")))
