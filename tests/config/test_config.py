import pytest

from mnemoray.config import ConfigError, RetrievalEvalConfig, RetrievalSuiteConfig, apply_overrides, load_config


def test_overrides_are_parsed_as_yaml_values():
    data = apply_overrides({"memory": {"name": "rag-dense"}}, ["memory.index.recency_weight=0.5", "ks=[1,3]"])
    assert data["memory"]["index"]["recency_weight"] == 0.5
    assert data["ks"] == [1, 3]


def test_invalid_value_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="memory.chunking"):
        load_config(RetrievalEvalConfig, None, ["memory.chunking=paragraph"], base={"dataset": "locomo", "data": "x"})
    with pytest.raises(ConfigError, match="must look like key=value"):
        apply_overrides({}, ["nonsense"])


def test_unknown_key_rejected(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("dataset: locomo\ndata: x\nmemroy: {}\n")
    with pytest.raises(ConfigError, match="memroy"):
        load_config(RetrievalEvalConfig, cfg)


def test_shipped_suite_config_loads_and_points_at_shared_data(data_root):
    from mnemoray.config import REPO_ROOT

    cfg = load_config(RetrievalSuiteConfig, REPO_ROOT / "configs/eval/retrieval_local.yaml")
    assert set(cfg.memories) == {"rag-dense", "rag-bm25", "rag-hybrid"}
    assert {r.dataset for r in cfg.runs} == {"locomo", "realmem"}
    for run in cfg.runs:
        assert run.data.exists(), run.data


def test_shipped_llm_configs_validate():
    from mnemoray.config import REPO_ROOT
    from mnemoray.config.llm import load_engine_config

    engines = {p.name: load_engine_config(p, []).engine for p in sorted((REPO_ROOT / "configs/llm").glob("*.yaml"))}
    assert engines == {"openai_local.yaml": "openai", "tiny_local.yaml": "hf", "vllm_cluster.yaml": "vllm"}


def test_serve_config_files_build_the_app(tiny_cache):
    import yaml
    from ray.serve import Application

    from mnemoray.config import REPO_ROOT
    from mnemoray.distributed.serve.llm_app import app_builder
    from mnemoray.llm.tiny import ensure_tiny

    spec = yaml.safe_load((REPO_ROOT / "serve/llm_local.yaml").read_text())["applications"][0]
    assert spec["import_path"] == "mnemoray.distributed.serve.llm_app:app_builder"
    args = spec["args"] | {"model": str(ensure_tiny(tiny_cache, arch="qwen2", seed=0))}
    assert isinstance(app_builder(args), Application)
    with pytest.raises(ValueError, match="unknown LLM app args"):
        app_builder(args | {"modle": "x"})
    cluster = yaml.safe_load((REPO_ROOT / "serve/llm_cluster.yaml").read_text())["applications"][0]["args"]
    assert cluster["engine"] == "vllm" and set(cluster) <= set(args) | {"num_replicas", "autoscaling", "engine_kwargs"}


def test_command_line_flags_win_over_the_config_file(tmp_path):
    from mnemoray.cli.common import flag_overrides

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("dataset: realmem\ndata: /somewhere\nks: [1]\nmemory: {name: rag-dense}\n")
    odd_path = tmp_path / "a: b" / "yes"
    flags = flag_overrides({"dataset": "locomo", "data": odd_path, "ks": [5, 10], "memory.name": "rag-bm25",
                            "limit": None, "skip_invalid": True})
    cfg = load_config(RetrievalEvalConfig, cfg_file, flags)
    assert cfg.dataset == "locomo" and cfg.data == odd_path  # quoted: YAML keeps it a string
    assert cfg.ks == [5, 10] and cfg.memory.name == "rag-bm25" and cfg.skip_invalid is True
    assert cfg.limit is None  # flags not given leave the file's (or default) value
