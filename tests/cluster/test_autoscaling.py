"""Autoscaling as configured (issue 17 item 7): every deployment of the cluster Serve configs
(the memory service and the LLM endpoint) has a Serve autoscaling_config with min < max, the
LLM app hands its autoscaling to Serve and names a bad key, and the cluster manifests' worker
groups scale between their min and max (tests/cluster/test_manifests.py checks the bounds)."""

from __future__ import annotations

import pytest
import yaml

from mnemoray.config import load_config
from mnemoray.config.service import MemoryServiceConfig
from mnemoray.distributed.serve.llm_app import LLMAppConfig, app_builder
from repo_paths import REPO


def _app_args(name: str) -> dict:
    [app] = yaml.safe_load((REPO / "serve" / name).read_text())["applications"]
    return app["args"]


def test_every_memory_service_deployment_autoscales_on_the_cluster(monkeypatch):
    monkeypatch.chdir(REPO)
    config = _app_args("memory_cluster.yaml")["config"]
    cfg = load_config(MemoryServiceConfig, REPO / config, [])
    deployments = {"embedder": cfg.embedder.deployment, "store": cfg.store, "model": cfg.model.deployment,
                   "ingress": cfg.ingress}
    for name, deployment in deployments.items():
        assert deployment.autoscaling is not None, f"{config}: {name} has a fixed replica count"
        assert deployment.autoscaling.min_replicas < deployment.autoscaling.max_replicas, name


def test_the_llm_endpoint_autoscales_on_the_cluster():
    args = _app_args("llm_cluster.yaml")
    cfg = LLMAppConfig(**{**args, "engine": "hf"})  # the same args on the engine this machine serves
    scaling = cfg.replicas()["autoscaling_config"]
    assert scaling["min_replicas"] < scaling["max_replicas"] and scaling["target_ongoing_requests"] > 0
    assert "num_replicas" not in cfg.replicas()
    assert LLMAppConfig(model="m", num_replicas=3).replicas() == {"num_replicas": 3}


def test_a_bad_llm_autoscaling_setting_is_named():
    with pytest.raises(ValueError, match=r"autoscaling.\(all\): .*min_replicas must not exceed max_replicas"):
        LLMAppConfig(model="m", autoscaling={"min_replicas": 5, "max_replicas": 2})
    with pytest.raises(ValueError, match="autoscaling.max_replica: Extra inputs are not permitted"):
        LLMAppConfig(model="m", autoscaling={"max_replica": 2})


def test_the_llm_app_builds_with_autoscaling(tiny_model):
    from ray.serve import Application

    app = app_builder({"model": str(tiny_model), "autoscaling": {"min_replicas": 1, "max_replicas": 3}})
    assert isinstance(app, Application)
