"""A real two-node Ray cluster on this machine for the cluster lane: `ray start --head` and a
second `ray start --address` node, each with `num_cpus` logical CPUs and its own custom resource,
on free ports and in their own temp dir, so other Ray instances on the machine are left alone.
Torn down by killing the process groups of the `ray start` commands run here (never `ray stop`,
which would stop every Ray of this user). The client side (`ray job submit` from the checkout,
the job's task placement from the state API) is here too, shared by the lane's modules."""

from __future__ import annotations

import contextlib
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
from repo_paths import REPO

RAY = str(Path(sys.executable).with_name("ray"))
SERVE = str(Path(sys.executable).with_name("serve"))


@dataclass
class LocalCluster:
    temp_dir: Path
    gcs_port: int = field(default_factory=free_port)
    dashboard_port: int = field(default_factory=free_port)
    groups: list[int] = field(default_factory=list)
    token: str = field(default_factory=lambda: secrets.token_hex(24))
    num_cpus: int = 1

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
        common = ["--num-cpus", str(self.num_cpus), "--disable-usage-stats", "--node-ip-address", "127.0.0.1"]
        head = [RAY, "start", "--head", "--port", str(self.gcs_port), "--dashboard-host", "127.0.0.1",
                "--dashboard-port", str(self.dashboard_port), "--ray-client-server-port", str(free_port()),
                "--temp-dir", str(self.temp_dir), "--resources", json.dumps({"head_slot": 1}), *common]
        # the worker node keeps its own temp dir, as a second machine would: sharing the head's, its
        # runtime-env agent would unpack a job's working_dir again over the driver's working directory
        worker = [RAY, "start", "--address", self.address, "--temp-dir", str(self.temp_dir / "worker"),
                  "--resources", json.dumps({"worker_slot": 1}), *common]
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
            with contextlib.suppress(ProcessLookupError):  # the group already ended
                os.killpg(group, signal.SIGKILL)
        self.groups.clear()
        for proc in Path("/proc").iterdir():
            with contextlib.suppress(OSError):  # the process ended while we looked (ProcessLookupError too)
                if proc.name.isdigit() and str(self.temp_dir).encode() in (proc / "cmdline").read_bytes():
                    os.kill(int(proc.name), signal.SIGKILL)


    def ray_cli(self, *args: str, check: bool = False) -> subprocess.CompletedProcess:
        """The `ray` command line from the repository root, as this cluster's client."""
        out = subprocess.run([RAY, *args], cwd=REPO, env=self.env(), capture_output=True, text=True)
        if check:
            assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        return out

    def submit(self, *entrypoint: str, wait: bool = True) -> tuple[str, subprocess.CompletedProcess]:
        """`ray job submit --working-dir .` with the checkout's runtime env, as the README shows;
        returns (submission id, result)."""
        sub_id = f"lane-{os.urandom(4).hex()}"
        out = self.ray_cli("job", "submit", "--submission-id", sub_id, "--working-dir", ".",
                           "--runtime-env", "cluster/runtime_env/installed.yaml", *([] if wait else ["--no-wait"]),
                           "--", *entrypoint)
        return sub_id, out

    def _job_rows(self, kind: str, sub_id: str) -> list[dict]:
        job_id = self.get(f"/api/jobs/{sub_id}")["job_id"]
        return self.get(f"/api/v0/{kind}?detail=1&limit=10000&filter_keys=job_id&filter_predicates=%3D"
                        f"&filter_values={job_id}")["data"]["result"]["result"]

    def job_task_nodes(self, sub_id: str) -> dict[str, set[str]]:
        """task name -> node roles where the job's finished tasks ran (Ray's task events, by job id)."""
        roles = self.nodes()
        found: dict[str, set[str]] = {}
        for row in self._job_rows("tasks", sub_id):
            if row["state"] == "FINISHED" and row.get("node_id"):
                found.setdefault(row["name"], set()).add(roles.get(row["node_id"], row["node_id"]))
        return found

    def job_actor_nodes(self, sub_id: str) -> dict[str, set[str]]:
        """actor class -> node roles where the job's actors lived (dead ones included)."""
        roles = self.nodes()
        found: dict[str, set[str]] = {}
        for row in self._job_rows("actors", sub_id):
            node = (row.get("address") or {}).get("raylet_id") or row.get("node_id")
            if node:
                found.setdefault(row["class_name"], set()).add(roles.get(node, node))
        return found


def new_cluster(num_cpus: int = 1) -> LocalCluster:
    return LocalCluster(Path(tempfile.mkdtemp(prefix="mnemoray-ray-", dir="/tmp")), num_cpus=num_cpus)


# Ray's fake multi-node provider names the head (and numbers the nodes it adds) with these ids.
FAKE_HEAD_ID = "f" * 51 + "00000"


@dataclass
class AutoscalingCluster(LocalCluster):
    """A head without CPUs and Ray's autoscaler (v2) with its fake multi-node provider, which
    starts worker nodes as local processes for pending CPU demand and removes them once idle.

    Two settings make the provider work from the wheel: `type: external` naming its class
    (`type: fake_multinode` reads the defaults file `fake_multi_node/example.yaml`, which the
    wheel does not ship) and `gcs_address` (it otherwise joins port 6379, another Ray's). With
    the v1 autoscaler each added node is "(launch failed)": v1 runs a node updater that sets
    node tags, which this read-only provider refuses."""

    max_nodes: int = 2
    idle_timeout_minutes: float = 0.2

    def config(self) -> dict:
        return {
            "cluster_name": "mnemoray-lane", "max_workers": self.max_nodes, "upscaling_speed": 1.0,
            "idle_timeout_minutes": self.idle_timeout_minutes,
            "provider": {"type": "external", "module": FAKE_PROVIDER, "gcs_address": self.address,
                         "launch_multiple": True, "head_node_id": FAKE_HEAD_ID,
                         "disable_node_updaters": True, "disable_launch_config_check": True},
            "available_node_types": {
                "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
                "cpu": {"resources": {"CPU": 1, "object_store_memory": OBJECT_STORE}, "node_config": {},
                        "min_workers": 0, "max_workers": self.max_nodes}},
            "head_node_type": "ray.head.default", "auth": {"ssh_user": "ray"}, "docker": {},
            "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
            "rsync_exclude": [], "rsync_filter": [], "initialization_commands": [], "setup_commands": [],
            "head_setup_commands": [], "worker_setup_commands": [], "head_start_ray_commands": [],
            "worker_start_ray_commands": []}

    def start(self, node_env: dict[str, str] | None = None) -> None:
        path = self.temp_dir / "autoscaling.json"
        path.write_text(json.dumps(self.config()))
        env = {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_enable_autoscaler_v2": "1",
               "RAY_CLOUD_INSTANCE_ID": FAKE_HEAD_ID, "RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_ID,
               **(node_env or {})}
        head = [RAY, "start", "--head", "--port", str(self.gcs_port), "--dashboard-host", "127.0.0.1",
                "--dashboard-port", str(self.dashboard_port), "--ray-client-server-port", str(free_port()),
                "--temp-dir", str(self.temp_dir), "--num-cpus", "0", "--object-store-memory", str(OBJECT_STORE),
                "--autoscaling-config", str(path), "--disable-usage-stats", "--node-ip-address", "127.0.0.1"]
        self._run_start("head", head, env)

    def node_states(self) -> dict[str, str]:
        """node id -> ALIVE / DEAD, every node the cluster has had (the state API)."""
        rows = self.get("/api/v0/nodes?detail=1")["data"]["result"]["result"]
        return {n["node_id"]: n["state"] for n in rows}


FAKE_PROVIDER = "ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider"
OBJECT_STORE = 200 * 2**20


def new_autoscaling_cluster(**settings) -> AutoscalingCluster:
    return AutoscalingCluster(Path(tempfile.mkdtemp(prefix="mnemoray-ray-", dir="/tmp")), **settings)
