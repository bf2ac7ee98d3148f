"""Engine configs: the shipped tiny config works offline; bad configs name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from mnemoray.config import REPO_ROOT, ConfigError
from mnemoray.config.llm import EngineConfig, load_engine_config
from mnemoray.llm.cache import CachedEngine
from mnemoray.llm.hf_engine import HFEngine
from mnemoray.llm.registry import build_engine
from mnemoray.llm.types import ChatMessage, ChatRequest, SamplingParams

TINY_LOCAL = REPO_ROOT / "configs" / "llm" / "tiny_local.yaml"


def test_tiny_local_config_builds_an_offline_engine(tiny_cache: Path, tmp_path: Path):
    cfg = load_engine_config(TINY_LOCAL, [f"tiny_cache_dir={tiny_cache}", f"cache_dir={tmp_path / 'responses'}"])
    assert cfg.engine == "hf" and cfg.tiny is not None and cfg.tiny.arch == "qwen2"
    engine = build_engine(cfg)
    assert isinstance(engine, CachedEngine) and isinstance(engine.engine, HFEngine)
    assert Path(engine.model).parent == tiny_cache
    request = ChatRequest(messages=[ChatMessage(role="user", content="hi")], params=SamplingParams(max_tokens=3))
    assert engine.generate([request])[0].ok
    assert engine.generate([request])[0].cached


def test_defaults_and_validation():
    cfg = EngineConfig(engine="openai", model="m")
    assert (cfg.api_key_env, cfg.max_in_flight, cfg.timeout_s, cfg.max_retries) == ("OPENAI_API_KEY", 64, 60, 5)
    assert cfg.cache_dir is None and cfg.structured_retries == 2
    with pytest.raises(ConfigError, match="model"):
        load_engine_config(None, ["engine=hf"])
    with pytest.raises(ConfigError, match="temprature"):
        load_engine_config(TINY_LOCAL, ["temprature=1"])
    with pytest.raises(ConfigError, match="engine"):
        load_engine_config(None, ["engine=llamacpp", "model=m"])


def test_openai_engine_is_built_from_config(monkeypatch: pytest.MonkeyPatch):
    pytest.importorskip("openai")
    monkeypatch.setenv("MY_KEY", "sk-test")
    cfg = EngineConfig(engine="openai", model="served", base_url="http://127.0.0.1:9/v1", api_key_env="MY_KEY",
                       max_in_flight=3, timeout_s=5, max_retries=1)
    engine = build_engine(cfg)
    assert engine.name == "openai" and engine.model == "served"
    assert (engine.base_url, engine.api_key, engine.max_in_flight, engine.max_retries) == (
        "http://127.0.0.1:9/v1", "sk-test", 3, 1)
