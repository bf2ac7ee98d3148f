"""Evaluation: metrics (pure functions), per-history harness, reports and comparisons."""
