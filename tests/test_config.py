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
