"""The Ray-free algorithm core of GRPO / ADRPO (docs/ARCHITECTURE.md, "Metrics": training signals).

Plain torch functions, so the math is unit-tested on CPU and reused by any driver:

- `advantages`: group-relative advantages, zero-variance groups, dynamic-sampling refill.
- `aggregation`: masked mean/sum and the loss aggregation modes over a response mask.
- `kl`: per-token KL estimators (k1, k2, k3) between the policy and a frozen reference.
- `losses`: the clipped policy-ratio loss (clip-higher, dual clip, ADRPO sample weights),
  token entropy, and `grpo_loss` combining them.
- `minibatches`: index lists for several updates per rollout batch.

The Ray roles (rollout engines, trainer workers, reward actors) live in
`mnemoray.distributed` and call these.
"""
