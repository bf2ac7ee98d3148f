"""Every config file the repository ships loads, composed presets state only their
differences, and a broken file reports all of its errors at once."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mnemoray.config import ConfigError, RetrievalEvalConfig, load_config
from mnemoray.config.base import BASE_KEY, read_config_file
from mnemoray.config.files import KINDS, check_file, is_foreign, kind_of
from repo_paths import REPO

CONFIG_FILES = sorted(p for p in (REPO / "configs").rglob("*.yaml") if not is_foreign(p))
SERVE_FILES = sorted((REPO / "serve").glob("*.yaml"))


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_the_repository_ships_configs_of_every_kind():
    assert len(CONFIG_FILES) >= 20 and len(SERVE_FILES) >= 4
    assert {kind_of(p) for p in CONFIG_FILES} == set(KINDS) - {"eval-retrieval"}  # the suite covers retrieval


@pytest.mark.parametrize("path", CONFIG_FILES, ids=_rel)
def test_every_config_file_validates_with_the_engine_files_it_names(path: Path, monkeypatch):
    monkeypatch.chdir(REPO)  # jobs run from the repository root; engine paths are relative to it
    result = check_file(path, root=REPO)
    assert result.kind is not None, f"{_rel(path)} sits where no config kind is expected"
    assert result.ok, "\n".join(result.errors)


def _leaves(data: dict, prefix: str = "") -> dict[str, object]:
    """`a.b.c` -> value for every non-mapping value of nested sections."""
    out: dict[str, object] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("path", [p for p in CONFIG_FILES if "cluster" in p.name and "llm" not in p.parts], ids=_rel)
def test_cluster_presets_state_only_what_differs_from_their_local_twin(path: Path):
    raw = yaml.safe_load(path.read_text())
    assert BASE_KEY in raw, f"{_rel(path)} should extend its laptop preset with `base:`"
    twin = _leaves(read_config_file(path.parent / raw[BASE_KEY]))
    stated = _leaves({k: v for k, v in raw.items() if k != BASE_KEY})
    same = [k for k, v in stated.items() if k in twin and twin[k] == v]
    assert not same, f"{_rel(path)} restates {same} with the value its base already has"
    merged = _leaves(read_config_file(path))
    assert {k: merged[k] for k in stated} == stated  # what the preset states wins
    def kept(leaves: dict[str, object]) -> dict[str, object]:  # not stated, nor under a section the preset replaced
        return {k: v for k, v in leaves.items() if not any(k == s or k.startswith(s + ".") for s in stated)}

    assert kept(merged) == kept(twin)


@pytest.mark.parametrize("path", SERVE_FILES, ids=_rel)
def test_serve_files_match_the_serve_schema_and_the_app_args(path: Path, monkeypatch):
    from ray.serve.schema import ServeDeploySchema

    spec = ServeDeploySchema.model_validate(yaml.safe_load(path.read_text()))
    (app,) = spec.applications
    module, attr = app.import_path.split(":")
    assert callable(getattr(__import__(module, fromlist=[attr]), attr))
    args = app.args
    if app.import_path == "mnemoray.distributed.serve.memory_app:app_builder":
        from mnemoray.distributed.serve.memory_app import check_args

        monkeypatch.chdir(REPO)  # `serve run` is started from the repository root
        check_args(args)  # the service config file it names loads
        return
    from mnemoray.distributed.serve.llm_app import LLMAppConfig

    assert app.import_path == "mnemoray.distributed.serve.llm_app:app_builder"
    unknown = set(args) - set(LLMAppConfig.__dataclass_fields__)
    assert not unknown, f"{_rel(path)}: args {sorted(unknown)} are not LLM app settings"
    if args["engine"] == "hf":  # vllm is optional here: its check needs the package
        assert LLMAppConfig(**args).served_id() == args.get("model_id", Path(args["model"]).name)


def test_base_files_merge_section_by_section(tmp_path: Path):
    (tmp_path / "local.yaml").write_text(
        "dataset: locomo\ndata: /d\nks: [1, 5]\nmemory: {name: rag-dense, chunking: turn}\n"
    )
    (tmp_path / "cluster.yaml").write_text("base: local.yaml\nks: [10]\nmemory: {name: rag-bm25}\n")
    cfg = load_config(RetrievalEvalConfig, tmp_path / "cluster.yaml")
    assert cfg.ks == [10]  # lists replace
    assert cfg.memory.name == "rag-bm25" and cfg.memory.chunking == "turn"  # sections merge
    assert str(cfg.data) == "/d"


def test_base_cycles_and_missing_bases_are_refused(tmp_path: Path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\nks: [1]\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nks: [2]\n")
    with pytest.raises(ConfigError, match="cycle") as err:
        read_config_file(tmp_path / "a.yaml")
    assert "a.yaml" in str(err.value) and "b.yaml" in str(err.value)
    (tmp_path / "c.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="nowhere.yaml"):
        read_config_file(tmp_path / "c.yaml")


def test_every_invalid_key_of_a_file_is_reported_at_once(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: nosuchset\ndata: /d\nks: [0]\nmemory: {name: rag-dense, chunking: paragraph}\nmemroy: 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(RetrievalEvalConfig, bad)
    message = str(err.value)
    assert "bad.yaml" in message and "4 invalid keys" in message
    for key in ("dataset", "ks", "memory.chunking", "memroy"):
        assert f"key '{key}'" in message, message
    assert "nosuchset" in message


def test_config_check_names_the_bad_file_and_passes_the_good(tmp_path: Path):
    from typer.testing import CliRunner

    from mnemoray.cli.main import app

    good = REPO / "configs/eval/retrieval_local.yaml"
    (tmp_path / "configs" / "eval").mkdir(parents=True)
    bad = tmp_path / "configs" / "eval" / "qa_mine.yaml"
    bad.write_text("dataset: locomo\nanswerer: missing_engine.yaml\n")
    result = CliRunner().invoke(app, ["config", "check", str(good), str(bad)])
    assert result.exit_code != 0, result.output
    assert "qa_mine.yaml" in result.output and "retrieval_local.yaml" in result.output
    assert "key 'data'" in result.output and result.output.startswith("ok")


def test_config_registry_lists_every_registered_name_with_its_capabilities():
    from typer.testing import CliRunner

    from mnemoray.cli.main import app
    from mnemoray.eval.per_history import EVALUATIONS
    from mnemoray.llm.registry import ENGINES
    from mnemoray.loaders.registry import DATASETS
    from mnemoray.memory.registry import FRAMEWORKS
    from mnemoray.rewards.registry import REWARDS
    from mnemoray.rl.environments.registry import ENVIRONMENTS
    from mnemoray.rl.rollout_registry import ROLLOUTS

    result = CliRunner().invoke(app, ["config", "registry"])
    assert result.exit_code == 0, result.output
    listed = {tuple(line.split()[:2]) for line in result.output.splitlines() if line.strip()}
    for kind, registry in (("engine", ENGINES), ("memory", FRAMEWORKS), ("dataset", DATASETS),
                           ("evaluation", EVALUATIONS), ("reward", REWARDS), ("rl-env", ENVIRONMENTS),
                           ("rollout", ROLLOUTS)):
        assert {(kind, n) for n in registry.names()} <= listed, kind
    assert "engine     hf           guided_json=True" in result.output
    assert "memory     dualmem      built_by_llm=True" in result.output


def test_foreign_configs_are_listed_not_validated():
    verl = REPO / "configs/verl/grpo_membuilder.yaml"
    assert is_foreign(verl) and check_file(verl).kind == "foreign" and check_file(verl).ok
    assert not is_foreign(REPO / "configs/train/grpo_local.yaml")
