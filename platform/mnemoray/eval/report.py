"""Write a run's outputs: metrics.json, per_query.jsonl (streamed), report.md + a PNG plot."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from mnemoray.eval.metrics import METRIC_NAMES, mean_metrics, metric_order


class PerQueryWriter:
    """Appends per-query rows as they arrive, so nothing is lost if the run dies midway."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(path, "w", encoding="utf-8")

    def write(self, rows: list[dict[str, Any]]) -> None:
        for r in rows:
            self._f.write(json.dumps(r, ensure_ascii=False) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def summarize(
    rows: list[dict[str, Any]], dataset: str, memory: str, ks: list[int], extra: dict | None = None
) -> dict[str, Any]:
    order = metric_order(ks)
    overall = mean_metrics([r["metrics"] for r in rows])
    by_cat: dict[str, list] = defaultdict(list)
    for r in rows:
        by_cat[str(r.get("category") or "all")].append(r["metrics"])
    return {
        "dataset": dataset,
        "memory": memory,
        "n_queries": len(rows),
        "n_histories": len({r["history_id"] for r in rows}),
        "ks": ks,
        "metrics": {m: overall[m] for m in order} if overall else {},
        "by_category": {
            c: {m: v for m, v in mean_metrics(ms).items()} | {"n": len(ms)} for c, ms in sorted(by_cat.items())
        },
        **(extra or {}),
    }


def plot_recall(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = summary["ks"]
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    for metric in METRIC_NAMES:
        ax.plot(ks, [summary["metrics"].get(f"{metric}@{k}", 0.0) for k in ks], marker="o", label=metric)
    ax.set_xlabel("k (distinct evidence units retrieved)")
    ax.set_ylabel("score")
    ax.set_ylim(0, 1.02)
    ax.set_xticks(ks)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"{summary['memory']} on {summary['dataset']} ({summary['n_queries']} queries)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(summary: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    plot_recall(summary, out / "recall_at_k.png")
    order = list(summary["metrics"])
    lines = [
        f"# Retrieval evaluation: {summary['memory']} on {summary['dataset']}",
        "",
        f"{summary['n_queries']} queries over {summary['n_histories']} histories.",
        "",
        "| metric | value |",
        "| --- | --- |",
        *[f"| {m} | {summary['metrics'][m]:.4f} |" for m in order],
        "",
        "## By category",
        "",
        "| category | n | " + " | ".join(order) + " |",
        "| --- | --- | " + " | ".join("---" for _ in order) + " |",
    ]
    for cat, vals in summary["by_category"].items():
        lines.append(f"| {cat} | {vals['n']} | " + " | ".join(f"{vals.get(m, 0.0):.3f}" for m in order) + " |")
    if summary.get("invalid_records"):
        lines += ["", "## Skipped invalid records", ""] + [f"- {e}" for e in summary["invalid_records"]]
    lines += ["", "![recall against k](recall_at_k.png)", ""]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")


def fmt(value: Any, digits: int = 3) -> str:
    """A figure for a Markdown table: n/a for a missing value (e.g. nothing could be scored)."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def plot_grouped_bars(groups: dict[str, dict[str, Any]], series: list[tuple[str, str]], path: Path, title: str,
                      ylabel: str = "score", ymax: float | None = 1.02) -> None:
    """One bar per (group, series); missing values are drawn as empty bars (height 0, hatched)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(groups)
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(names) * max(1, len(series)) / 2 + 2), 3.6), dpi=120)
    for i, (key, label) in enumerate(series):
        vals = [groups[g].get(key) for g in names]
        bars = ax.bar([x + i * width for x in range(len(names))], [v or 0.0 for v in vals], width, label=label)
        for bar, v in zip(bars, vals):
            if v is None:
                bar.set_hatch("//")
    ax.set_xticks([x + width * (len(series) - 1) / 2 for x in range(len(names))])
    ax.set_xticklabels(names, rotation=20, ha="right")
    if ymax is not None:
        ax.set_ylim(0, ymax * 1.2)  # headroom for the legend above the bars
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="x-small", ncol=min(len(series), 2), loc="upper left")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_run_files(summary: dict[str, Any], out: Path, lines: list[str]) -> None:
    """metrics.json and report.md of a run (plots are written by the caller, into `out`)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    if summary.get("invalid_records"):
        lines = lines + ["", "## Skipped invalid records", ""] + [f"- {e}" for e in summary["invalid_records"]]
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
