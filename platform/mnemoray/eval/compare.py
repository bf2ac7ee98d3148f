"""Put several runs (folders with metrics.json) side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

DEFAULT_COLUMNS = ("recall_any@5", "recall_any@10", "recall_all@10", "ndcg@10", "recall_any@20", "recall_all@20")


def load_runs(dirs: list[Path]) -> list[dict[str, Any]]:
    runs = []
    for d in dirs:
        path = Path(d) / "metrics.json"
        if not path.is_file():
            raise FileNotFoundError(f"{d}: no metrics.json (is this a run folder?)")
        runs.append(json.loads(path.read_text(encoding="utf-8")) | {"_dir": str(d)})
    return runs


def eval_kind(run: dict[str, Any]) -> str:
    """Which evaluation wrote a run: its own `eval` field, else retrieval or QA by its metrics."""
    if run.get("eval"):
        return str(run["eval"])
    return "qa" if "accuracy_lenient" in run.get("metrics", {}) else "retrieval"


def _value(run: dict[str, Any], column: str) -> float | None:
    v = run["metrics"].get(column)
    return v if isinstance(v, (int, float)) else None


def _columns(runs: list[dict[str, Any]], columns: tuple[str, ...]) -> list[str]:
    """The preferred retrieval columns that runs have, then any other metric (e.g. QA accuracy)."""
    present = [c for c in columns if any(c in r["metrics"] for r in runs)]
    others = [m for r in runs for m in r["metrics"] if m not in present and not m.startswith(("recall", "ndcg"))]
    return present + list(dict.fromkeys(others))


def comparison_table(runs: list[dict[str, Any]], columns: tuple[str, ...] = DEFAULT_COLUMNS) -> Table:
    present = _columns(runs, columns)
    table = Table(title="Evaluation runs side by side (retrieval k = distinct evidence units; n/a = nothing scored)",
                  show_lines=False)
    for head in ("dataset", "memory", "eval", "queries", *present):
        table.add_column(head, justify="right" if head not in ("dataset", "memory", "eval") else "left", no_wrap=True)
    for r in sorted(runs, key=lambda x: (x["dataset"], x["memory"], eval_kind(x))):
        cells = []
        for c in present:
            v = _value(r, c)
            top = max((_value(o, c) for o in runs if o["dataset"] == r["dataset"] and _value(o, c) is not None),
                      default=None)
            text = ("n/a" if c in r["metrics"] else "-") if v is None else f"{v:.3f}"
            cells.append(f"[bold]{text}[/bold]" if v is not None and v == top else text)
        table.add_row(r["dataset"], r["memory"], eval_kind(r), str(r["n_queries"]), *cells)
    return table


def markdown_table(runs: list[dict[str, Any]], columns: tuple[str, ...] = DEFAULT_COLUMNS) -> str:
    present = _columns(runs, columns)
    lines = ["| dataset | memory | eval | queries | " + " | ".join(present) + " |",
             "| --- | --- | --- | ---: | " + " | ".join("---:" for _ in present) + " |"]
    for r in sorted(runs, key=lambda x: (x["dataset"], x["memory"], eval_kind(x))):
        vals = " | ".join(f"{_value(r, c):.3f}" if _value(r, c) is not None else ("n/a" if c in r["metrics"] else "-")
                          for c in present)
        lines.append(f"| {r['dataset']} | {r['memory']} | {eval_kind(r)} | {r['n_queries']} | {vals} |")
    return "\n".join(lines)


def wide_console() -> Console:
    """Full-width tables even when stdout is a pipe or a CI log."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


def print_comparison(dirs: list[Path], console: Console | None = None) -> list[dict[str, Any]]:
    runs = load_runs(dirs)
    (console or wide_console()).print(comparison_table(runs))
    return runs
