"""The cluster lane's autoscaling demo (opt-in, `bash scripts/test_cluster_lane.sh`): Ray's own
autoscaler (v2) with its fake multi-node provider on this machine (a head without CPUs, worker
nodes of one CPU added as local processes, at most two, removed after 12 idle seconds; own
temp dir, ports and token). `scripts/autoscale_demo.py` runs a synthesis-shaped Ray Data job
(one seed persona per row through the jobs' autoscaling actor pool, `ray.min_workers=1` ..
`ray.workers=2`, one CPU per actor): its demand adds worker nodes, every row runs on an added
node, the job completes, and the idle nodes are removed afterwards.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from local_cluster import RAY, new_autoscaling_cluster

from repo_paths import DATA, REPO

pytestmark = [pytest.mark.cluster_lane, pytest.mark.integration]
POLLS = 600  # state-API reads while waiting for the scale-down, each paced by a `ray status` process


@pytest.fixture(scope="module", autouse=True)
def _opt_in(request):
    if "cluster_lane" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("cluster lane: run with -m cluster_lane (scripts/test_cluster_lane.sh)")


@pytest.fixture(scope="module")
def cluster(_opt_in):
    cluster = new_autoscaling_cluster(max_nodes=2, idle_timeout_minutes=0.2)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def alive(states: dict[str, str]) -> set[str]:
    return {node for node, state in states.items() if state == "ALIVE"}


def test_job_demand_adds_worker_nodes_which_are_removed_when_idle(cluster):
    [head] = alive(cluster.node_states())  # the head alone, with no CPU for the job
    env = {**cluster.auth(), "RAY_ADDRESS": cluster.address}
    out = subprocess.run([sys.executable, "scripts/autoscale_demo.py", "--personas",
                          str(DATA / "personas" / "msc_personas_all.json"), "--limit", "4",
                          "--min-workers", "1", "--workers", "2"],
                         cwd=REPO, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = json.loads(out.stdout.strip().splitlines()[-1])["rows"]
    assert len(rows) == 4 and {r["dim"] for r in rows} == {384}
    added = {r["node"] for r in rows}
    assert head not in added  # every actor ran on a node the autoscaler added for it
    assert max(r["alive_nodes"] for r in rows) >= 2
    assert added <= set(cluster.node_states())
    states = cluster.node_states()
    for _ in range(POLLS):
        if alive(states) == {head}:
            break
        subprocess.run([RAY, "status", "--address", cluster.address],
                       env=env, capture_output=True)
        states = cluster.node_states()
    assert alive(states) == {head}, states  # the idle worker nodes were removed
    assert all(states[node] == "DEAD" for node in added)
