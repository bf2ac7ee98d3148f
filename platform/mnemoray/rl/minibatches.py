"""Index lists for several policy updates per rollout batch (PPO-style epochs).

Rollouts are expensive, so one batch is reused for `epochs` passes, each split into
minibatches in a fresh random order. The order of epoch e depends only on (seed, e), so
a run resumed in the middle of a batch replays exactly the same minibatches.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def epoch_permutation(n_samples: int, seed: int, epoch: int) -> list[int]:
    """The sample order of one epoch, fixed by (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n_samples).tolist()


def minibatches(n_samples: int, minibatch_size: int, epochs: int = 1, seed: int = 0) -> Iterator[list[int]]:
    """Yield index lists: per epoch every sample exactly once, in chunks of `minibatch_size`.

    The last chunk of an epoch holds the remainder when n_samples is not a multiple of the
    size (no sample is dropped or repeated within an epoch).
    """
    if n_samples < 0 or minibatch_size < 1 or epochs < 0 or seed < 0:
        raise ValueError(f"need n_samples >= 0, minibatch_size >= 1, epochs >= 0, seed >= 0; got "
                         f"{n_samples}, {minibatch_size}, {epochs}, {seed}")
    for epoch in range(epochs):
        order = epoch_permutation(n_samples, seed, epoch)
        for start in range(0, n_samples, minibatch_size):
            yield order[start:start + minibatch_size]


__all__ = ["epoch_permutation", "minibatches"]
