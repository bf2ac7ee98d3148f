"""Torch threads per GRPO role: "auto" splits a node's CPUs between the actors of one phase,
capped by the machine's cores; numbers and None pass through; the config accepts only these
(default 1)."""

from __future__ import annotations

import os

import pytest

from mnemoray.config import load_config
from mnemoray.config.base import ConfigError
from mnemoray.config.grpo import GRPOConfig
from mnemoray.rl.threads import machine_cores, phase_threads
from repo_paths import REPO


@pytest.mark.parametrize(("job_cpus", "actors", "cores", "expected"), [
    (2, 1, 2, 2),     # one engine on a 2-CPU job: both cores while it samples
    (2, 2, 2, 1),     # two policy workers update together: one core each
    (6, 1, 2, 2),     # Ray told of more CPUs than the machine has: the cores cap it
    (16, 3, 16, 5),   # shares round down
    (1, 4, 8, 1),     # never below one thread
    (0.5, 1, None, 1),
])
def test_auto_shares_the_cpus_between_the_actors_of_a_phase(job_cpus, actors, cores, expected):
    assert phase_threads("auto", job_cpus, actors, cores) == expected


def test_numbers_and_none_are_kept_as_given():
    assert phase_threads(3, 2, 2, 2) == 3
    assert phase_threads(None, 2, 2, 2) is None
    assert 1 <= machine_cores() <= (os.cpu_count() or 1)
    with pytest.raises(ValueError, match="'many'"):
        phase_threads("many", 2, 1, 2)  # type: ignore[arg-type]


def test_config_takes_auto_numbers_or_null_and_names_a_bad_value():
    cfg = load_config(GRPOConfig, REPO / "configs/train/grpo_local.yaml", [])
    assert cfg.ray.torch_threads == 1 and cfg.rollout.threads == 1
    cfg = load_config(GRPOConfig, REPO / "configs/train/grpo_local.yaml",
                      ["rollout.threads=auto", "ray.torch_threads=null"])
    assert cfg.rollout.threads == "auto" and cfg.ray.torch_threads is None
    with pytest.raises(ConfigError, match="threads"):
        load_config(GRPOConfig, REPO / "configs/train/grpo_local.yaml", ["rollout.threads=0"])
