"""Torch threads per GRPO role: the loop's phases run one after another, so each may use the job's cores.

The driver runs a step's phases in turn (sync, generate, reward, score, update), so while
the rollout engines sample the policy workers wait, and the other way round. Ray starts
actors with OMP_NUM_THREADS=1, which leaves a phase on 2 cores using one of them. "auto"
gives each actor of a phase its share of the CPUs: the job's CPUs (capped by the cores of
the machine it runs on) divided by the actors that run that phase at the same time. It is
not the default: with several policy workers, the ranks waiting in the step's broadcast
keep cores busy while the engines sample, and 2 OpenMP threads then made the tiny model's
sampling 10-20x slower (README, GRPO); with one worker it made a 100M step faster.
"""

from __future__ import annotations

import os
from typing import Literal

from mnemoray.torch_threads import set_torch_threads

Threads = int | Literal["auto"] | None  # a count, "auto" (the phase's share of the CPUs) or None (torch default)


def phase_threads(setting: Threads, job_cpus: float, actors: int, machine_cores: int | None) -> int | None:
    """The torch thread count of one of `actors` actors that run a phase together.

    `job_cpus`: the CPUs Ray gives the job (all nodes); `machine_cores`: cores of the machine
    the actor runs on (None: unknown). A number is used as it is; None leaves torch's default.
    """
    if setting is None or isinstance(setting, int):
        return setting
    if setting != "auto":
        raise ValueError(f"threads must be a positive number, 'auto' or null, not {setting!r}")
    cpus = int(job_cpus) if machine_cores is None else min(int(job_cpus), machine_cores)
    return max(1, cpus // max(1, actors))


def machine_cores() -> int | None:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else os.cpu_count()


__all__ = ["Threads", "machine_cores", "phase_threads", "set_torch_threads"]
