"""The whole loop on Ray: the stages that call each capability's Ray entry (stages.py) and
the runner (run.py: output URI, one Ray session, report.md). The stage graph and the report
are plain Python in mnemoray.pipeline."""

from mnemoray.distributed.pipeline.run import PipelineRun, run_pipeline
from mnemoray.distributed.pipeline.stages import StageConfigs, build_graph, stage_configs

__all__ = ["PipelineRun", "StageConfigs", "build_graph", "run_pipeline", "stage_configs"]
