"""Torch's intra-op threads in the current process, set once where a worker, replica or actor
starts: Ray starts them with OMP_NUM_THREADS=1 (or the CPUs they reserve), and more threads than
free cores make every forward pass slower."""

from __future__ import annotations


def set_torch_threads(threads: int | None) -> None:
    """Apply a thread count (None or 0 keeps torch's default)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
