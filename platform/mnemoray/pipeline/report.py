"""`report.md` at the pipeline's output root: one row per stage (what ran, records in / out,
time, the key figure, links to its outputs), the stages' own plots, the evaluation
through the service and the baselines' retrieval table."""

from __future__ import annotations

import json
from pathlib import Path

from mnemoray.pipeline.graph import FAILED, RAN, SKIPPED, StageRecord

TINY_NOTE = (
    "This run trained a tiny random model (about 0.5 M parameters, a few steps). Its text is noise: "
    "the synthesized data, the teacher's memory and the trained model mean nothing, and the learned "
    "figures here measure only that every stage ran for real. A loss that falls, a reward near its "
    "ceiling (the toy reward counts characters) or a recall of 1.0 through the service (a history "
    "with fewer memory items than k: every item is retrieved) are not results. The baselines' "
    "table is the one real measurement. Point the stage configs at a real model "
    "(configs/pipeline/cluster.yaml) for figures that mean something.")


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _count(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


def _time(rec: StageRecord) -> str:
    if rec.seconds is None:
        return ""
    text = f"{rec.seconds:.1f} s"
    return f"({text} earlier)" if rec.status == SKIPPED else text


def _status(rec: StageRecord) -> str:
    if rec.status == FAILED:
        return f"**failed**: {rec.error}"
    if rec.reason:
        return f"{rec.status}: {rec.reason}"
    return rec.status


def stage_rows(records: list[StageRecord]) -> list[str]:
    """The stage table as markdown lines (links relative to the output root)."""
    lines = ["| stage | what ran | status | records in | records out | time | key figure | outputs |",
             "| --- | --- | --- | ---: | ---: | ---: | --- | --- |"]
    for rec in records:
        result = rec.result
        links = " ".join(f"[{name}]({rec.name}/{path})" for name, path in (result.links if result else {}).items())
        if rec.status == FAILED:
            links = f"[error.txt]({rec.name}/error.txt)"
        lines.append("| " + " | ".join(_cell(x) for x in (
            rec.name, rec.description, _status(rec), _count(result.records_in if result else None),
            _count(result.records_out if result else None), _time(rec), result.figure if result else "",
            links)) + " |")
    return lines


def write_report(root: Path, records: list[StageRecord], wall_s: float, tiny: bool, config_file: str) -> Path:
    ran = sum(r.status == RAN for r in records)
    skipped = sum(r.status == SKIPPED for r in records)
    failed = [r for r in records if r.status == FAILED]
    lines = ["# mnemoray pipeline report", "",
             f"Config `{config_file}`; this run took {wall_s:.0f} s: {ran} stages ran, {skipped} were done before "
             f"and skipped, {len(failed)} failed, {len(records) - ran - skipped - len(failed)} did not run.", ""]
    if tiny:
        lines += [f"> {TINY_NOTE}", ""]
    lines += ["## Stages", "", *stage_rows(records), ""]
    if failed:
        lines += ["## Failures", ""]
        lines += [f"- `{r.name}`: {r.error} (traceback in `{r.name}/error.txt`); the stages that need it did not run"
                  for r in failed]
        lines.append("")
    plots = [(r.name, name, path) for r in records if r.result for name, path in r.result.links.items()
             if path.endswith(".png") and (root / r.name / path).exists()]
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{stage}: {name}]({stage}/{path})" for stage, name, path in plots]
        lines.append("")
    by_name = {r.name: r for r in records}
    evaluated = by_name.get("eval_service")
    if evaluated and evaluated.result and evaluated.result.values.get("metrics"):
        metrics = evaluated.result.values["metrics"]
        lines += ["## Through the memory service (synthesized data, trained memory model)", "",
                  "| metric | value |", "| --- | ---: |"]
        lines += [f"| {name} | {value:.3f} |" for name, value in sorted(metrics.items())
                  if isinstance(value, int | float)]
        lines.append("")
    baselines = by_name.get("baselines")
    table = root / "baselines" / "run" / "comparison.md"
    if baselines and baselines.status in (RAN, SKIPPED) and table.exists():
        lines += ["## Retrieval baselines (LLM-free, shared LoCoMo / RealMem samples)", "",
                  table.read_text(encoding="utf-8").strip(), ""]
    path = root / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "stages.json").write_text(json.dumps([
        {"stage": r.name, "status": r.status, "reason": r.reason, "error": r.error, "seconds": r.seconds,
         "config_hash": r.config_hash, "result": r.result.to_json() if r.result else None} for r in records],
        indent=2) + "\n", encoding="utf-8")
    return path


__all__ = ["TINY_NOTE", "stage_rows", "write_report"]
