"""The whole loop as one job, plain Python: the stage graph (graph.py: done markers with the
config hash, resume, failures, live stages) and report.md (report.py). The stages and the
runner are in mnemoray.distributed.pipeline."""

from mnemoray.pipeline.graph import Stage, StageContext, StageGraph, StageRecord, StageResult

__all__ = ["Stage", "StageContext", "StageGraph", "StageRecord", "StageResult"]
