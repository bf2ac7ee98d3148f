"""`ray job submit` entry for every evaluation; `--kind` picks it, as `mnemoray eval <kind>` does,
with the same config files and runners.

    ray job submit --working-dir . -- python jobs/evaluate.py --kind qa \
        --config configs/eval/qa_cluster.yaml --out s3://BUCKET/runs/qa key=value ...

Kinds: suite (the retrieval suite: every configured memory on every configured dataset, one
table), qa, rolememo, roleplay, realmem-judge. One entry for all because they share one shape:
a config, a runner, one output folder (metrics.json, per_query.jsonl, report.md); each kind has
its own RayJob in cluster/kuberay/. Inside a Ray job, `ray.init()` joins the cluster that runs
the job. `--out` (or the config's `out`) is an absolute path every node sees or a URI (s3://,
gs://, file://: written locally, copied there when the run succeeds); a relative path is
refused in a submitted job.
"""

from __future__ import annotations

import sys

from mnemoray.distributed.jobs import evaluation_kinds, output_job_main


def main(argv: list[str] | None = None) -> int:
    return output_job_main(argv, description=__doc__, kinds=evaluation_kinds(), default_kind="suite")


if __name__ == "__main__":
    sys.exit(main())
