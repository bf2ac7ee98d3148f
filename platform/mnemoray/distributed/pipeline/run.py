"""Running the loop: where it writes (a path, or a URI through a local work folder copied
there stage by stage), one Ray session for every stage, then report.md."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mnemoray.config.pipeline import PipelineConfig
from mnemoray.distributed.pipeline.stages import build_graph, stage_configs
from mnemoray.outputs import check_output, is_uri, upload
from mnemoray.pipeline.graph import FAILED, StageRecord
from mnemoray.pipeline.report import write_report

WORK_ROOT = Path("~/.cache/mnemoray/pipeline")


@dataclass
class PipelineRun:
    out: str
    root: Path
    records: list[StageRecord]
    report: Path
    wall_s: float

    @property
    def failed(self) -> list[StageRecord]:
        return [r for r in self.records if r.status == FAILED]


def work_root(cfg: PipelineConfig, out: str) -> Path:
    """Where the stages write: `out` itself, or for a URI a local folder (the same one on a
    rerun, so it resumes) whose stages are copied to the URI as they finish."""
    if not is_uri(out):
        return Path(out).expanduser().resolve()
    if cfg.work_dir is not None:
        return cfg.work_dir.expanduser().resolve()
    return (WORK_ROOT / hashlib.sha256(out.encode()).hexdigest()[:16]).expanduser().resolve()


def run_pipeline(cfg: PipelineConfig, *, config_file: str, out_key: str = "out", from_stage: str | None = None,
                 log: Callable[[str], None] = print) -> PipelineRun:
    """Run (or resume) the loop; every stage's config is validated before Ray starts."""
    from mnemoray.distributed.runtime import ray_session

    out = check_output(cfg.out, key=out_key)
    root = work_root(cfg, out)
    graph = build_graph(cfg, root)
    rerun = graph.after(from_stage) if from_stage else None
    tiny = stage_configs(cfg, root).sft.model.tiny is not None
    copy = (lambda name, folder: upload(folder, f"{out.rstrip('/')}/{name}")) if is_uri(out) else None
    start = time.perf_counter()
    with ray_session(cfg.ray):
        records = graph.run(root, rerun=rerun, disabled=cfg.disabled, log=log, on_stage=copy)
    wall = time.perf_counter() - start
    report = write_report(root, records, wall, tiny, config_file)
    if is_uri(out):
        for name in ("report.md", "stages.json"):
            _upload_file(root / name, out)
    log(f"[pipeline] report: {out.rstrip('/')}/report.md ({wall:.0f} s)")
    return PipelineRun(out, root, records, report, wall)


def _upload_file(path: Path, uri: str) -> None:
    from pyarrow import fs

    filesystem, base = fs.FileSystem.from_uri(uri)
    filesystem.create_dir(base, recursive=True)
    with filesystem.open_output_stream(f"{base.rstrip('/')}/{path.name}") as f:
        f.write(path.read_bytes())


__all__ = ["PipelineRun", "run_pipeline", "work_root"]
