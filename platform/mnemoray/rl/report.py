"""report.md and plots of a GRPO run, from its metrics.jsonl (plain Python + matplotlib)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

PLOTS = (("reward_mean", "reward"), ("kl", "KL to the reference"), ("response_len_mean", "response tokens"),
         ("entropy", "token entropy"))
TIMING = ("generate_s", "reward_s", "ref_s", "update_s", "sync_s", "step_s")


def _series(records: list[dict[str, Any]], key: str) -> list[tuple[int, float]]:
    return [(r["step"], float(r[key])) for r in records if isinstance(r.get(key), int | float)]


def plot_curves(records: list[dict[str, Any]], out_png: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PLOTS), figsize=(4 * len(PLOTS), 3.2))
    for ax, (key, label) in zip(axes, PLOTS):
        points = _series(records, key)
        if points:
            ax.plot(*zip(*points))
        ax.set_title(label)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def grpo_report(name: str, records: list[dict[str, Any]], run_dir: Path) -> Path:
    """Write run_dir/report.md (first vs last steps, mean timing) and run_dir/curves.png."""
    run_dir = Path(run_dir)
    plot_curves(records, run_dir / "curves.png")
    head, tail = records[: max(1, len(records) // 5)], records[-max(1, len(records) // 5):]

    def mean(rows: list[dict[str, Any]], key: str) -> float | None:
        values = [float(r[key]) for r in rows if isinstance(r.get(key), int | float)]
        return statistics.fmean(values) if values else None

    keys = ["reward_mean", "reward_std", "reward_failed", "kl", "entropy", "clip_frac_low", "clip_frac_high",
            "response_len_mean", "response_clipped_frac", "zero_std_groups"]
    keys += sorted({k for r in records for k in r if k.startswith(("reward/", "dynamic/", "attribution/"))})
    lines = [f"# GRPO run `{name}`", "", f"{len(records)} steps logged.", "",
             f"| metric | first {len(head)} steps | last {len(tail)} steps |", "| --- | ---: | ---: |"]
    for key in keys:
        first, last = mean(head, key), mean(tail, key)
        if first is not None or last is not None:
            lines.append(f"| {key} | {_fmt(first)} | {_fmt(last)} |")
    timing = [r["timing"] for r in records if isinstance(r.get("timing"), dict)]
    if timing:
        lines += ["", "Mean time per step (s):", "", "| " + " | ".join(TIMING) + " |",
                  "|" + " ---: |" * len(TIMING),
                  "| " + " | ".join(_fmt(mean(timing, k)) for k in TIMING) + " |"]
    lines += ["", "![reward, KL, length, entropy](curves.png)", ""]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
