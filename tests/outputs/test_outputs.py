"""Output locations: paths and URIs a job may write to, the refusal of a relative path inside a
submitted Ray job (with what to pass instead), and the staging copy to a URI through pyarrow."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from mnemoray.outputs import (
    JOB_CONFIG_ENV,
    OutputError,
    check_local_output,
    check_output,
    output_dir,
    submission_id,
)
from repo_paths import REPO


def _load_job(name: str):
    spec = importlib.util.spec_from_file_location(f"job_{name}", REPO / "jobs" / f"{name}.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    return job


JOB_ENV = {JOB_CONFIG_ENV: json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_1.zip"},
                                       "metadata": {"job_submission_id": "raysubmit_abc"}})}


def test_a_submitted_job_is_recognised_from_rays_job_config():
    assert submission_id(JOB_ENV) == "raysubmit_abc"
    assert submission_id({}) is None
    assert submission_id({JOB_CONFIG_ENV: "not json"}) == "unknown"


def test_a_relative_path_is_fine_on_a_laptop_and_refused_in_a_submitted_job():
    assert check_output("runs/main", environ={}) == "runs/main"
    with pytest.raises(OutputError) as err:
        check_output("runs/main", key="out", environ=JOB_ENV)
    message = str(err.value)
    assert "out='runs/main'" in message and "raysubmit_abc" in message
    assert "out=/mnt/shared/" in message and "s3://BUCKET/PREFIX" in message


@pytest.mark.parametrize("target", ["/mnt/shared/runs", "s3://bucket/runs/main", "gs://bucket/p", "file:///tmp/x"])
def test_absolute_paths_and_uris_pass_in_a_submitted_job(target: str):
    assert check_output(target, environ=JOB_ENV) == target


def test_a_uri_collapsed_by_a_path_field_is_repaired_and_bad_uris_are_named():
    assert check_output(str(Path("s3://bucket/runs")), environ={}) == "s3://bucket/runs"
    with pytest.raises(OutputError, match="names no bucket"):
        check_output("s3:///runs", environ={})
    with pytest.raises(OutputError, match="unsupported scheme 'ftp'"):
        check_output("ftp://host/runs", key="--out", environ={})


def test_a_uri_output_is_staged_locally_and_copied_there_on_success(tmp_path):
    dest = tmp_path / "bucket" / "runs"
    with output_dir(f"file://{dest}", environ=JOB_ENV) as local:
        assert local != dest and local.is_dir()
        (local / "locomo" / "rag-dense").mkdir(parents=True)
        (local / "locomo" / "rag-dense" / "report.json").write_text('{"recall": 1}')
        (local / "comparison.md").write_text("| table |\n")
    assert (dest / "comparison.md").read_text() == "| table |\n"
    assert json.loads((dest / "locomo" / "rag-dense" / "report.json").read_text()) == {"recall": 1}
    assert not local.exists()


def test_a_failed_job_copies_nothing(tmp_path):
    dest = tmp_path / "bucket"
    with pytest.raises(RuntimeError), output_dir(f"file://{dest}", environ={}) as local:
        (local / "partial.json").write_text("{}")
        raise RuntimeError("stage failed")
    assert not dest.exists()


def test_a_local_output_is_the_path_itself(tmp_path):
    with output_dir(tmp_path / "out", environ={}) as local:
        assert local == tmp_path / "out" and local.is_dir()


def test_the_retrieval_job_refuses_a_relative_out_when_submitted(monkeypatch, capsys):
    job = _load_job("evaluate_retrieval")
    monkeypatch.chdir(REPO)
    monkeypatch.setenv(JOB_CONFIG_ENV, JOB_ENV[JOB_CONFIG_ENV])
    assert job.main(["--config", "configs/eval/retrieval_local.yaml", "--out", "runs/main"]) == 2
    err = capsys.readouterr().err
    assert "--out 'runs/main' is a relative path" in err and "--out /mnt/shared/" in err


def test_a_resuming_job_takes_a_path_and_refuses_a_uri():
    assert check_local_output("/mnt/shared/synth", environ=JOB_ENV) == Path("/mnt/shared/synth")
    with pytest.raises(OutputError, match="needs a filesystem path: synthesis resumes"):
        check_local_output("s3://bucket/synth", why=": synthesis resumes", environ={})


def test_the_synthesis_job_refuses_a_relative_out_when_submitted(monkeypatch, capsys):
    job = _load_job("synthesize")
    monkeypatch.chdir(REPO)
    monkeypatch.setenv(JOB_CONFIG_ENV, JOB_ENV[JOB_CONFIG_ENV])
    assert job.main(["--config", "configs/synth/rolememo_local.yaml", "out=runs/synth"]) == 2
    assert "out='runs/synth' is a relative path" in capsys.readouterr().err


@pytest.mark.parametrize(("job", "config", "override", "key"), [
    ("train_sft", "configs/train/sft_local.yaml", "out=runs/sft", "out"),
    ("train_sft", "configs/train/sft_local.yaml", "storage_path=ray_storage", "storage_path"),
    ("train_grpo", "configs/train/grpo_local.yaml", "out=runs/grpo", "out"),
])
def test_the_training_jobs_refuse_relative_outputs_when_submitted(job, config, override, key, monkeypatch, capsys):
    entry = _load_job(job)
    monkeypatch.chdir(REPO)
    monkeypatch.setenv(JOB_CONFIG_ENV, JOB_ENV[JOB_CONFIG_ENV])
    extra = ["out=/mnt/shared/runs"] if key != "out" else []
    assert entry.main(["--config", config, override, *extra]) == 2
    value = override.split("=", 1)[1]
    assert f"{key}={value!r} is a relative path" in capsys.readouterr().err


def test_a_resumable_uri_output_starts_from_what_is_there_and_keeps_a_failed_runs_work(tmp_path):
    dest = tmp_path / "bucket" / "memory"
    (dest / "snapshots").mkdir(parents=True)
    (dest / "snapshots" / "h1.json").write_text('{"done": 1}')
    with pytest.raises(RuntimeError), output_dir(f"file://{dest}", resume=True, environ=JOB_ENV) as local:
        assert (local / "snapshots" / "h1.json").read_text() == '{"done": 1}'  # copied down: h1 is skipped
        (local / "snapshots" / "h2.json").write_text('{"done": 2}')
        raise RuntimeError("killed while building h3")
    assert sorted(p.name for p in (dest / "snapshots").iterdir()) == ["h1.json", "h2.json"]
    with output_dir(f"file://{dest}", resume=True, environ=JOB_ENV) as local:  # a resubmit sees both
        assert sorted(p.name for p in (local / "snapshots").iterdir()) == ["h1.json", "h2.json"]


def test_a_resumable_uri_output_that_does_not_exist_yet_starts_empty(tmp_path):
    dest = tmp_path / "new"
    with output_dir(f"file://{dest}", resume=True, environ={}) as local:
        assert list(local.iterdir()) == []
        (local / "summary.json").write_text("{}")
    assert (dest / "summary.json").is_file()


@pytest.mark.parametrize(("job", "argv"), [
    ("build_memory", ["--config", "configs/memory/dualmem_local.yaml"]),
    ("evaluate", ["--kind", "rolememo", "--config", "configs/eval/rolememo_local.yaml"]),
    ("evaluate", ["--kind", "qa", "--config", "configs/eval/qa_local.yaml"]),
    ("evaluate", ["--kind", "roleplay", "--config", "configs/eval/roleplay_local.yaml"]),
    ("evaluate", ["--kind", "realmem-judge", "--config", "configs/eval/realmem_judge_local.yaml"]),
    ("evaluate", ["--kind", "suite", "--config", "configs/eval/retrieval_local.yaml"]),
])
def test_every_output_job_refuses_a_relative_out_when_submitted(job, argv, monkeypatch, capsys):
    entry = _load_job(job)
    monkeypatch.chdir(REPO)
    monkeypatch.setenv(JOB_CONFIG_ENV, JOB_ENV[JOB_CONFIG_ENV])
    assert entry.main(argv) == 2  # the presets' out is relative (runs/...)
    err = capsys.readouterr().err
    assert "is a relative path, and this runs as the submitted Ray job raysubmit_abc" in err, err
    assert "out=/mnt/shared/" in err and "s3://BUCKET/PREFIX" in err
    assert entry.main([*argv, "--out", "runs/x"]) == 2
    assert "--out 'runs/x' is a relative path" in capsys.readouterr().err


def test_an_output_job_names_a_bad_config_key_and_exits_2(monkeypatch, capsys):
    entry = _load_job("evaluate")
    monkeypatch.chdir(REPO)
    assert entry.main(["--kind", "rolememo", "--config", "configs/eval/rolememo_local.yaml", "nonsense_key=1"]) == 2
    assert "nonsense_key" in capsys.readouterr().err
