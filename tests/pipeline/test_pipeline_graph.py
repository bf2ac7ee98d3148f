"""The stage graph without Ray: skip what is done, rerun what changed and what reads it,
failures block only the stages that need them, killed stages resume, live stages run only
for a reader and close after their last one, report rows say what happened."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mnemoray.pipeline.graph import (
    DISABLED,
    DONE,
    FAILED,
    NOT_RUN,
    RAN,
    SKIPPED,
    STARTED,
    GraphError,
    Stage,
    StageGraph,
    StageResult,
)
from mnemoray.pipeline.report import stage_rows, write_report


class Recorder:
    """Stage functions that write a file, count their calls and can be told to fail."""

    def __init__(self):
        self.calls: list[str] = []
        self.fail: set[str] = set()
        self.events: list[str] = []

    def stage(self, name: str, inputs: tuple[str, ...] = (), settings: object = None, live: bool = False) -> Stage:
        def run(ctx):
            self.calls.append(name)
            if name in self.fail:
                raise RuntimeError(f"{name} broke")
            seen = sum(r.values.get("n", 0) for r in ctx.inputs.values())
            (ctx.out / "out.txt").write_text(f"{name}:{seen}")
            if live:
                self.events.append(f"open {name}")
                ctx.stack.callback(lambda: self.events.append(f"close {name}"))
            return StageResult(records_in=seen, records_out=seen + 1, figure=f"{name} figure",
                               links={"out.txt": "out.txt"}, values={"n": seen + 1})
        return Stage(name, run, inputs, settings if settings is not None else {"name": name}, f"the {name} step",
                     live=live)


def chain(rec: Recorder, **settings) -> StageGraph:
    return StageGraph([
        rec.stage("a", (), settings.get("a")),
        rec.stage("b", ("a",), settings.get("b")),
        rec.stage("c", ("b",), settings.get("c")),
        rec.stage("solo", (), settings.get("solo")),
    ])


def statuses(records) -> dict[str, str]:
    return {r.name: r.status for r in records}


def test_a_rerun_skips_finished_stages_and_keeps_their_results(tmp_path):
    rec = Recorder()
    first = chain(rec).run(tmp_path, log=lambda _: None)
    assert statuses(first) == {"a": RAN, "b": RAN, "c": RAN, "solo": RAN}
    assert [r.result.records_in for r in first] == [0, 1, 2, 0]
    rec.calls.clear()
    second = chain(rec).run(tmp_path, log=lambda _: None)
    assert rec.calls == []
    assert statuses(second) == {"a": SKIPPED, "b": SKIPPED, "c": SKIPPED, "solo": SKIPPED}
    assert [r.result.figure for r in second] == [r.result.figure for r in first]
    assert json.loads((tmp_path / "b" / DONE).read_text())["config_hash"] == first[1].config_hash


def test_a_changed_stage_reruns_with_every_stage_that_reads_it(tmp_path):
    rec = Recorder()
    chain(rec).run(tmp_path, log=lambda _: None)
    (tmp_path / "b" / "stale.txt").write_text("from the old settings")
    rec.calls.clear()
    records = chain(rec, b={"name": "b", "lr": 2}).run(tmp_path, log=lambda _: None)
    assert rec.calls == ["b", "c"]
    assert statuses(records) == {"a": SKIPPED, "b": RAN, "c": RAN, "solo": SKIPPED}
    assert not (tmp_path / "b" / "stale.txt").exists()  # outputs of other settings are cleared


def test_from_a_stage_reruns_it_and_every_stage_after_it(tmp_path):
    rec = Recorder()
    graph = chain(rec)
    graph.run(tmp_path, log=lambda _: None)
    rec.calls.clear()
    graph.run(tmp_path, rerun=graph.after("c"), log=lambda _: None)
    assert rec.calls == ["c", "solo"]
    with pytest.raises(GraphError, match="unknown stage 'nope'"):
        graph.after("nope")


def test_a_failure_is_reported_and_blocks_only_the_stages_that_need_it(tmp_path):
    rec = Recorder()
    rec.fail.add("b")
    records = chain(rec).run(tmp_path, log=lambda _: None)
    by = {r.name: r for r in records}
    assert statuses(records) == {"a": RAN, "b": FAILED, "c": NOT_RUN, "solo": RAN}
    assert by["b"].error == "RuntimeError: b broke"
    assert "RuntimeError: b broke" in (tmp_path / "b" / "error.txt").read_text()
    assert not (tmp_path / "b" / DONE).exists() and not (tmp_path / "c").exists()
    assert by["c"].reason == "needs b (failed)" and by["c"].result is None
    rec.fail.clear()
    rec.calls.clear()
    records = chain(rec).run(tmp_path, log=lambda _: None)  # fixed: the failed stage and its readers run
    assert rec.calls == ["b", "c"]
    assert statuses(records) == {"a": SKIPPED, "b": RAN, "c": RAN, "solo": SKIPPED}
    assert not (tmp_path / "b" / "error.txt").exists()


def test_a_killed_stage_resumes_on_its_partial_outputs_unless_its_settings_changed(tmp_path):
    rec = Recorder()
    graph = chain(rec)
    hashes = graph.hashes()
    for name, config_hash in (("a", hashes["a"]), ("b", "an-older-config")):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "part-0.parquet").write_text("partial")
        (tmp_path / name / STARTED).write_text(json.dumps({"config_hash": config_hash}))
    graph.run(tmp_path, log=lambda _: None)
    assert (tmp_path / "a" / "part-0.parquet").exists()  # same settings: kept for the stage to resume from
    assert not (tmp_path / "b" / "part-0.parquet").exists()  # other settings: cleared


def test_a_disabled_stage_is_reported_and_its_readers_do_not_run(tmp_path):
    rec = Recorder()
    records = chain(rec).run(tmp_path, disabled=["b"], log=lambda _: None)
    assert statuses(records) == {"a": RAN, "b": DISABLED, "c": NOT_RUN, "solo": RAN}
    with pytest.raises(GraphError, match="unknown stage 'x'"):
        chain(rec).run(tmp_path, disabled=["x"], log=lambda _: None)


def test_a_live_stage_runs_only_for_a_reader_and_closes_after_its_last_one(tmp_path):
    rec = Recorder()

    def graph():
        return StageGraph([rec.stage("model"), rec.stage("service", ("model",), live=True),
                           rec.stage("eval", ("service",)), rec.stage("after")])

    graph().run(tmp_path, log=lambda _: None)
    assert rec.calls == ["model", "service", "eval", "after"]
    assert rec.events == ["open service", "close service"]
    rec.calls.clear()
    records = graph().run(tmp_path, log=lambda _: None)
    assert rec.calls == []  # nothing reads the service this time: it is not started
    assert statuses(records)["service"] == SKIPPED
    rec.calls.clear()
    (tmp_path / "eval" / DONE).unlink()  # the evaluation was killed: the service comes up again for it
    graph().run(tmp_path, log=lambda _: None)
    assert rec.calls == ["service", "eval"]


def test_the_close_of_a_live_stage_happens_before_the_stage_after_its_last_reader(tmp_path):
    rec = Recorder()
    order: list[str] = []
    base = rec.stage("after")

    def after(ctx):
        order.extend(rec.events)
        return base.run(ctx)

    StageGraph([rec.stage("service", live=True), rec.stage("eval", ("service",)),
                Stage("after", after, (), {"x": 1})]).run(tmp_path, log=lambda _: None)
    assert order == ["open service", "close service"]


def test_inputs_must_be_earlier_stages():
    rec = Recorder()
    with pytest.raises(GraphError, match="reads \\['b'\\], which are not earlier stages"):
        StageGraph([rec.stage("a", ("b",)), rec.stage("b")])
    with pytest.raises(GraphError, match="listed twice"):
        StageGraph([rec.stage("a"), rec.stage("a")])


def test_report_has_a_row_per_stage_with_status_counts_and_links(tmp_path):
    rec = Recorder()
    rec.fail.add("b")
    records = chain(rec).run(tmp_path, log=lambda _: None)
    rows = stage_rows(records)
    assert len(rows) == 2 + 4
    a, b, c, solo = rows[2:]
    assert a.startswith("| a | the a step | ran | 0 | 1 | ") and "[out.txt](a/out.txt)" in a
    assert "**failed**: RuntimeError: b broke" in b and "[error.txt](b/error.txt)" in b
    assert "not run: needs b (failed)" in c
    assert "solo figure" in solo
    path = write_report(tmp_path, records, 12.0, tiny=True, config_file="configs/pipeline/local.yaml")
    text = path.read_text()
    assert "2 stages ran, 0 were done before and skipped, 1 failed, 1 did not run" in text
    assert "tiny random model" in text and "not results" in text
    assert "- `b`: RuntimeError: b broke" in text
    stages = json.loads((tmp_path / "stages.json").read_text())
    assert [s["status"] for s in stages] == [RAN, FAILED, NOT_RUN, RAN]


def test_report_marks_skipped_stage_times_as_earlier(tmp_path):
    rec = Recorder()
    chain(rec).run(tmp_path, log=lambda _: None)
    records = chain(rec).run(tmp_path, log=lambda _: None)
    assert all("s earlier)" in row for row in stage_rows(records)[2:])
    assert Path(write_report(tmp_path, records, 1.0, tiny=False, config_file="x.yaml")).read_text().count(
        "skipped (done before)") == 4
