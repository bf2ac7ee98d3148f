"""The cluster lane (opt-in: `bash scripts/test_cluster_lane.sh`, or `python -m pytest -m
cluster_lane tests/cluster`): a real two-node Ray cluster on this machine (`ray start --head` and
`ray start --address`, one CPU and one custom resource each, token authentication on), driven
the way a user drives one, through the `ray` and `serve` command lines:

- `ray job submit --working-dir . --runtime-env cluster/runtime_env/installed.yaml` of an
  evaluation job succeeds, its Ray Data actors ran on both nodes (node ids from Ray's state
  API), and its outputs are at the `file://` URI the test passed;
- a relative `--out` inside the submitted job fails it with the message saying what to pass;
- `serve deploy` of the memory service config answers on the cluster;
- `ray job stop` ends a running job: status STOPPED, its driver process gone, nothing copied
  to its output URI.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml
from local_cluster import RAY, SERVE, LocalCluster, new_cluster

from mnemoray.client import MemoryClient
from mnemoray.ports import free_port
from repo_paths import REPO
from sample_data import write_rolememo_dataset

pytestmark = [pytest.mark.cluster_lane, pytest.mark.integration]
ADMIN = "cluster-lane-admin-key-0123456789"


@pytest.fixture(scope="module")
def cluster(cluster_lane_opt_in):  # skipped before a cluster starts
    cluster = new_cluster()
    try:
        # the pool waits for its min_workers actors before handing out histories (Ray Data's
        # own setting), so each of the two actors gets one of the two histories
        cluster.start(node_env={"RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S": "600"})
        yield cluster
    finally:
        cluster.stop()


def test_the_cluster_has_two_nodes_and_refuses_a_client_without_the_token(cluster):
    assert sorted(cluster.nodes().values()) == ["head_slot", "worker_slot"]
    env = {k: v for k, v in cluster.env().items() if k != "RAY_AUTH_TOKEN"}
    env["RAY_AUTH_TOKEN"] = "not-the-token-" + "0" * 20
    out = subprocess.run([RAY, "job", "list"], cwd=REPO, env=env, capture_output=True, text=True)
    text = out.stdout + out.stderr
    assert out.returncode != 0 and ("401" in text or "nauthorized" in text or "uthenticat" in text), text[-2000:]


def test_a_submitted_evaluation_runs_on_both_nodes_and_writes_to_the_uri(cluster, tmp_path):
    data = write_rolememo_dataset(tmp_path / "synth")
    dest = tmp_path / "bucket" / "rolememo"
    sub_id, out = cluster.submit("python", "jobs/evaluate.py", "--kind", "rolememo",
                         "--config", "configs/eval/rolememo_local.yaml", "--out", f"file://{dest}",
                         f"data={json.dumps(str(data))}", "memory.name=rag-dense",
                         "ray.workers=2", "ray.min_workers=2", "ray.cpus_per_worker=1")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert cluster.get(f"/api/jobs/{sub_id}")["status"] == "SUCCEEDED"
    # one Ray Data actor per node (each node has one CPU, each actor takes one), one history each
    tasks = cluster.job_task_nodes(sub_id)
    assert tasks.get("MapWorker(MapBatches(HistoryEvaluator)).submit") == {"head_slot", "worker_slot"}, tasks
    metrics = json.loads((dest / "metrics.json").read_text())
    assert (metrics["eval"], metrics["memory"], metrics["n_histories"], metrics["n_queries"]) == (
        "rolememo", "rag-dense", 2, 3)
    assert (dest / "report.md").is_file() and (dest / "per_query.jsonl").is_file()
    info = cluster.get(f"/api/jobs/{sub_id}")["runtime_env"]
    assert info["working_dir"].startswith("gcs://") and info["py_modules"][0].startswith("gcs://")
    assert not (REPO / "runs" / "rolememo" / "local" / "lane").exists()


def test_a_relative_out_fails_the_submitted_job_saying_what_to_pass(cluster):
    sub_id, out = cluster.submit("python", "jobs/evaluate.py", "--kind", "rolememo",
                         "--config", "configs/eval/rolememo_local.yaml", "--out", "runs/lane")
    assert out.returncode != 0
    logs = cluster.ray_cli("job", "logs", sub_id, check=True).stdout
    assert f"--out 'runs/lane' is a relative path, and this runs as the submitted Ray job {sub_id}" in logs
    assert "--out /mnt/shared/" in logs and "s3://BUCKET/PREFIX" in logs
    assert cluster.get(f"/api/jobs/{sub_id}")["status"] == "FAILED"


def _serve_status(cluster: LocalCluster) -> str:
    """The memory app's status as `serve status` prints it (each call is a process start, which
    paces the wait: `serve deploy` has no blocking mode)."""
    out = subprocess.run([SERVE, "status", "--address", cluster.dashboard], cwd=REPO, env=cluster.env(),
                         capture_output=True, text=True, check=True).stdout
    apps = (yaml.safe_load(out) or {}).get("applications") or {}
    return (apps.get("memory") or {}).get("status", "NOT_STARTED")


def test_serve_deploy_of_the_memory_service_answers_on_the_cluster(cluster, tmp_path):
    (tmp_path / "admin.key").write_text(ADMIN)
    shipped = yaml.safe_load((REPO / "configs/serve/memory_local.yaml").read_text())
    shipped.update(data_dir=str(tmp_path / "data"), admin_key_file=str(tmp_path / "admin.key"),
                   llm=str(REPO / "configs/llm/tiny_local.yaml"),
                   embedder={**shipped["embedder"], "deployment": {"num_cpus": 0.25}},
                   store={"num_cpus": 0.25}, model={**shipped["model"], "deployment": {"num_cpus": 0.25}})
    (tmp_path / "memory.yaml").write_text(yaml.safe_dump(shipped))
    serve_cfg = yaml.safe_load((REPO / "serve/memory_local.yaml").read_text())
    port = free_port()
    serve_cfg["proxy_location"] = "HeadOnly"  # two nodes on one machine cannot both bind the port
    serve_cfg["http_options"] = {"host": "127.0.0.1", "port": port}
    serve_cfg["applications"][0]["args"]["config"] = str(tmp_path / "memory.yaml")
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(serve_cfg))
    env = cluster.env()
    out = subprocess.run([SERVE, "deploy", str(tmp_path / "serve.yaml"), "--address", cluster.dashboard],
                         cwd=REPO, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    try:
        status = _serve_status(cluster)
        while status in ("NOT_STARTED", "DEPLOYING"):
            status = _serve_status(cluster)
        assert status == "RUNNING", cluster.get("/api/serve/applications/")
        url = f"http://127.0.0.1:{port}"
        admin = MemoryClient(url, ADMIN)
        created = admin._call("POST", "/v1/admin/tenants", {"tenant": "lane"})
        tenant = MemoryClient(url, created["api_key"])
        tenant.add([{"speaker": "user", "text": "I adopted a rescue dog named Max."},
                    {"speaker": "assistant", "text": "How is Max settling in?"}], session_id="s1", date="1 May 2024")
        hits = tenant.search("what is my dog called?", k=1)
        assert hits and "Max" in hits[0]["text"]
    finally:
        subprocess.run([SERVE, "shutdown", "-y", "--address", cluster.dashboard], cwd=REPO, env=env,
                       capture_output=True)


def test_ray_job_stop_ends_a_running_job_cleanly(cluster, tmp_path):
    data = write_rolememo_dataset(tmp_path / "synth")
    dest = tmp_path / "bucket" / "rolememo"
    sub_id, out = cluster.submit("python", "jobs/evaluate.py", "--kind", "rolememo",
                         "--config", "configs/eval/rolememo_local.yaml", "--out", f"file://{dest}",
                         f"data={json.dumps(str(data))}", wait=False)
    assert out.returncode == 0, out.stderr
    logs = subprocess.Popen([RAY, "job", "logs", "--follow", sub_id], cwd=REPO, env=cluster.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in logs.stdout:  # block until the job's own entrypoint is running
        if "Running entrypoint" in line:
            break
    stop = cluster.ray_cli("job", "stop", sub_id, check=True)
    logs.kill()
    logs.wait()
    job = cluster.get(f"/api/jobs/{sub_id}")
    assert job["status"] == "STOPPED", (job, stop.stdout)
    pid = (job.get("driver_info") or {}).get("pid")
    if pid:
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid), 0)
    assert not dest.exists()  # a stopped job copies nothing to its URI
    _, again = cluster.submit("python", "-c", "import ray; ray.init(); print(len(ray.nodes()))")
    assert again.returncode == 0 and "\n2\n" in again.stdout  # the cluster takes the next job
