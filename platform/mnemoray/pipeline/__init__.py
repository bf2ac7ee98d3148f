"""The whole loop as one job: a plain-Python stage graph (graph.py), the stages that call
each capability's own function (stages.py), the runner (run.py) and report.md (report.py)."""

from mnemoray.pipeline.graph import Stage, StageContext, StageGraph, StageRecord, StageResult
from mnemoray.pipeline.run import PipelineRun, run_pipeline

__all__ = ["PipelineRun", "Stage", "StageContext", "StageGraph", "StageRecord", "StageResult", "run_pipeline"]
