"""The verl custom reward function, at the path verl configs name.

    reward:
      custom_reward_function:
        path: pkg://mnemoray.rl.verl_reward     # or this file's absolute path
        name: compute_score
        reward_kwargs: {reward: length-penalty}

The implementation is `mnemoray.rl.verl.reward.compute_score` (see docs/verl.md).
"""

from mnemoray.rl.verl.reward import compute_score

__all__ = ["compute_score"]
