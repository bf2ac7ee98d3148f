"""`ray job submit` entry for the retrieval suite (the main job); the same as
`jobs/evaluate.py --kind suite`.

    ray job submit --working-dir . -- python jobs/evaluate_retrieval.py \
        --config configs/eval/retrieval_cluster.yaml --out s3://BUCKET/runs/retrieval key=value ...

Inside a Ray job, `ray.init()` joins the cluster that runs the job. `--out` (or the config's
`out`) is a path or a URI (s3://, gs://, file://: written locally, then copied there); a
relative path is refused in a submitted job, where it would land in Ray's temporary copy of
the working directory.
"""

from __future__ import annotations

import sys

from mnemoray.distributed.jobs import evaluation_kinds, output_job_main


def main(argv: list[str] | None = None) -> int:
    suite = {"suite": evaluation_kinds()["suite"]}
    return output_job_main(argv, description=__doc__, kinds=suite, default_kind="suite")


if __name__ == "__main__":
    sys.exit(main())
