"""The cluster lane's autoscaling demo (opt-in, `bash scripts/test_cluster_lane.sh`): Ray's own
autoscaler (v2) with its fake multi-node provider on this machine (a head without CPUs, worker
nodes of one CPU added as local processes, at most two, removed after 12 idle seconds; own
temp dir, ports and token). The real RoleMemo synthesis job (`jobs/synthesize.py --kind rolememo
--config configs/synth/rolememo_local.yaml`, two personas, a small token target, the actor pools
at `ray.min_workers=1` .. `ray.workers=2`) runs as a driver of that cluster with the instant
OpenAI-compatible fault endpoint as its LLM: its actors' CPU demand adds worker nodes, the job
writes its dataset, and the idle nodes are removed afterwards.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from local_cluster import RAY, new_autoscaling_cluster

from repo_paths import REPO

pytestmark = [pytest.mark.cluster_lane, pytest.mark.integration]
POLLS = 600  # state-API reads while waiting for the scale-down, each paced by a `ray status` process


@pytest.fixture(scope="module")
def cluster(cluster_lane_opt_in):  # skipped before a cluster starts
    cluster = new_autoscaling_cluster(max_nodes=2, idle_timeout_minutes=0.2)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def alive(states: dict[str, str]) -> set[str]:
    return {node for node, state in states.items() if state == "ALIVE"}


def test_synthesis_job_demand_adds_worker_nodes_which_are_removed_when_idle(cluster, tiny_cache, tmp_path):
    from mnemoray.llm.fault_server import FaultConfig, FaultServer
    from mnemoray.llm.tiny import ensure_tiny

    [head] = alive(cluster.node_states())  # the head alone, with no CPU for the job
    env = {**cluster.auth(), "RAY_ADDRESS": cluster.address}
    out = tmp_path / "rolememo"
    with FaultServer(FaultConfig(vary_strings=True)) as url:
        llm = tmp_path / "llm.yaml"
        llm.write_text(f"engine: openai\nmodel: fault-model\nbase_url: {url}\nmax_in_flight: 16\n"
                       "timeout_s: 30\nmax_retries: 2\nstructured_retries: 1\n")
        argv = [sys.executable, "jobs/synthesize.py", "--kind", "rolememo", "--config",
                "configs/synth/rolememo_local.yaml", f"out={out}", f"llm={llm}", "llm_overrides=[]",
                f"tokenizer={ensure_tiny(tiny_cache, arch='qwen2', seed=0)}", "limit=2", "target_tokens=3000",
                "ray.min_workers=1", "ray.workers=2", "ray.num_cpus=null"]
        with open(tmp_path / "job.out", "w") as stdout, open(tmp_path / "job.err", "w") as stderr:
            job = subprocess.Popen(argv, cwd=REPO, env=env, stdout=stdout, stderr=stderr)
            seen: set[str] = set()
            most = 1
            while job.poll() is None:  # each read paced by a `ray status` process
                states = cluster.node_states()
                most = max(most, len(alive(states)))
                seen |= set(states)
                subprocess.run([RAY, "status", "--address", cluster.address], env=env, capture_output=True)
            returncode = job.wait()
    logs = (tmp_path / "job.out").read_text()[-3000:] + (tmp_path / "job.err").read_text()[-3000:]
    assert returncode == 0, logs
    printed = (tmp_path / "job.out").read_text()  # Ray's autoscaler events, then the job's summary
    summary = json.loads(printed[printed.rindex("\n{") + 1:])
    assert summary["histories"]["count"] == 2, summary
    histories = pq.read_table(out / "dataset" / "histories.parquet")
    assert histories.num_rows == 2 and set(histories.column_names) >= {"persona_id"}
    assert most >= 2, logs  # the job's demand added worker nodes while it ran
    states = cluster.node_states()
    added = (seen | set(states)) - {head}
    assert added
    for _ in range(POLLS):
        if alive(states) == {head}:
            break
        subprocess.run([RAY, "status", "--address", cluster.address], env=env, capture_output=True)
        states = cluster.node_states()
    assert alive(states) == {head}, states  # the idle worker nodes were removed
    assert all(states[node] == "DEAD" for node in added)
