"""The cluster lane's whole-loop job (opt-in, `bash scripts/test_cluster_lane.sh`): `ray job
submit --working-dir .` of `jobs/pipeline.py --config configs/pipeline/local.yaml` to a real
two-node cluster (two logical CPUs per node: the memory service holds two while the
evaluation runs beside it) succeeds, every stage ran, `report.md` and `stages.json` are at
the `file://` URI the test passed, and the job's tasks and actors ran on both nodes (node ids
from Ray's state API). The baselines stage is cut to one LoCoMo history (the rest of the
loop runs as configured) to keep the lane short.
"""

from __future__ import annotations

import json

import pytest
from local_cluster import new_cluster

from repo_paths import DATA

pytestmark = [pytest.mark.cluster_lane, pytest.mark.integration]
STAGES = ["synth", "memory", "sft", "grpo", "export", "serve", "eval_service", "baselines"]


@pytest.fixture(scope="module")
def cluster(cluster_lane_opt_in):  # skipped before a cluster starts
    cluster = new_cluster(num_cpus=2)
    try:
        # the nodes hold the shared data (a submitted job imports the package from Ray's copy)
        cluster.start(node_env={"MNEMORAY_DATA": str(DATA), "DS_ACCELERATOR": "cpu"})
        yield cluster
    finally:
        cluster.stop()


def test_the_submitted_pipeline_runs_every_stage_on_both_nodes_and_reports_at_the_uri(cluster, tmp_path):
    dest = tmp_path / "bucket" / "pipeline"
    baselines = ['runs=[{dataset: locomo, data: "${data_root}/locomo"}]', "memories=[rag-bm25]", "limit=1",
                 "ray.workers=1"]
    sub_id, out = cluster.submit("python", "jobs/pipeline.py", "--config", "configs/pipeline/local.yaml",
                                 "--out", f"file://{dest}", f"work_dir={json.dumps(str(tmp_path / 'work'))}",
                                 f"baselines.overrides={json.dumps(baselines)}")
    logs = out.stdout[-6000:] + out.stderr[-2000:]
    assert out.returncode == 0, logs
    assert cluster.get(f"/api/jobs/{sub_id}")["status"] == "SUCCEEDED"
    stages = json.loads((dest / "stages.json").read_text())
    assert [(s["stage"], s["status"]) for s in stages] == [(n, "ran") for n in STAGES], logs
    report = (dest / "report.md").read_text()
    assert "## Retrieval baselines" in report and "tiny random model" in report
    for name in STAGES:  # each stage's folder was copied to the URI as it finished
        assert (dest / name / "_done.json").is_file(), name
    tasks, actors = cluster.job_task_nodes(sub_id), cluster.job_actor_nodes(sub_id)
    nodes = set().union(*tasks.values(), *actors.values())
    assert nodes == {"head_slot", "worker_slot"}, (tasks, actors)
