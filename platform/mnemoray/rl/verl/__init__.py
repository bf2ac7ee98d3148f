"""An adapter for teams that already train with verl (docs/verl.md).

- `reward.compute_score`: a mnemoray reward as verl's custom reward function (public path
  `mnemoray.rl.verl_reward:compute_score`), with stable extra keys and counted failures.
- `parquet.export_verl_parquet`: RL prompts as a verl RL parquet file (`data.train_files`).
- `advantages`: ADRPO attribution weights for a verl batch and row-wise advantage scaling.

Nothing here imports verl: the adapter works on verl's call signature and DataProto's
duck-typed interface, so it is tested without verl (tests/rl/test_verl_adapter_units.py)
and against verl 0.9.1 in the optional lane (scripts/setup_verl_lane.sh).
"""

from mnemoray.rl.verl.advantages import (
    apply_attribution,
    attribution_weights_for_batch,
    scale_advantages,
    with_attribution,
)
from mnemoray.rl.verl.parquet import export_verl_parquet
from mnemoray.rl.verl.reward import RewardConfigError, compute_score, decode_ground_truth

__all__ = ["RewardConfigError", "apply_attribution", "attribution_weights_for_batch", "compute_score",
           "decode_ground_truth", "export_verl_parquet", "scale_advantages", "with_attribution"]
