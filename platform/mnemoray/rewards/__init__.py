"""Reward functions for GRPO / ADRPO (docs/ARCHITECTURE.md, "Contracts": reward), pure Python, no Ray.

- `scoring`: call any verl-style `compute_score` (sync or async) and normalise what it
  returns into a `RewardResult`; failures are counted, never a silent 0.
- `registry`: the `REWARDS` table (built-ins plus a user's file via `load_custom_reward`).
- `length_penalty`: MemBuilder's length-penalised reward.
- `qa`: the dense QA task reward and the synthetic QA type mix.
- `attribution`: ADRPO's per-sample weights from which memory type served the answers.
- `persona_judge`: RoleMemo's LLM persona judge (takes an engine).

Reward actors that run these concurrently live in `mnemoray.distributed.actors`.
"""
