"""The QA evaluation's report: metrics.json, report.md and a plot of accuracy and F1 by category."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def plot_qa(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cats = list(summary["by_category"])
    series = [("accuracy_lenient", "acc (lenient)"), ("accuracy_strict", "acc (strict)"), ("f1", "F1")]
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(cats) + 2), 3.5), dpi=120)
    for i, (key, label) in enumerate(series):
        vals = [summary["by_category"][c].get(key) or 0.0 for c in cats]
        ax.bar([x + i * width for x in range(len(cats))], vals, width, label=label)
    ax.set_xticks([x + width for x in range(len(cats))])
    ax.set_xticklabels(cats, rotation=20, ha="right")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("score")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(f"{summary['memory']} on {summary['dataset']} ({summary['n_queries']} questions)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def write_qa_report(summary: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    plot_qa(summary, out / "qa_by_category.png")
    m, f = summary["metrics"], summary["failures"]
    lines = [
        f"# QA evaluation: {summary['memory']} on {summary['dataset']}", "",
        f"{summary['n_queries']} questions over {summary['n_histories']} histories. "
        f"F1 stemming: {summary.get('f1_stemmer', 'none')}.", "",
        "| metric | value |", "| --- | --- |",
        *[f"| {k} | {_fmt(v)} |" for k, v in m.items()], "",
        "## Failures (excluded from the denominators above)", "",
        f"- answer failures: {f['answer']}",
        f"- judge failures: {f['judge_failures']} (lenient {f['judge_lenient']}, strict {f['judge_strict']})", "",
        "## By category", "",
        "| category | n | acc lenient | acc strict | F1 | BLEU-1 |", "| --- | --- | --- | --- | --- | --- |",
    ]
    for cat, v in summary["by_category"].items():
        lines.append(f"| {cat} | {v['n']} | {_fmt(v['accuracy_lenient'])} | {_fmt(v['accuracy_strict'])} | "
                     f"{_fmt(v['f1'])} | {_fmt(v['bleu1'])} |")
    if summary.get("invalid_records"):
        lines += ["", "## Skipped invalid records", ""] + [f"- {e}" for e in summary["invalid_records"]]
    lines += ["", "![accuracy and F1 by category](qa_by_category.png)", ""]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")
