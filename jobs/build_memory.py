"""`ray job submit` entry for building LLM-written memory banks (and their trajectory logs), the
same config files and runner as `mnemoray memory build`.

    ray job submit --working-dir . -- python jobs/build_memory.py \
        --config configs/memory/cluster.yaml --out s3://BUCKET/runs/memory/dualmem key=value ...

Inside a Ray job, `ray.init()` joins the cluster that runs the job. `--out` (or the config's
`out`) is an absolute path every node sees or a URI; a relative path is refused in a submitted
job. Resubmitting with the same `--out` resumes: histories already built are skipped (for a
URI, what is there is copied down first, and what a failed run finished is copied back).
"""

from __future__ import annotations

import sys

from mnemoray.distributed.jobs import build_kinds, output_job_main


def main(argv: list[str] | None = None) -> int:
    return output_job_main(argv, description=__doc__, kinds=build_kinds(), default_kind="memory")


if __name__ == "__main__":
    sys.exit(main())
