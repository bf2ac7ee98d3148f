"""stats.json and report.md of a synthesis run, computed from what is on disk (so they stay
right across resumed runs): per stage inputs / kept / rejected by reason, LLM calls and
tokens, wall time, pass rates; histories and a histogram of their lengths."""

from __future__ import annotations

import collections
import json
import statistics
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from mnemoray.config.synth import RoleMemoConfig
from mnemoray.synth.stages import STAGES
from mnemoray.synth.store import StageStore, read_jsonl

ONE_TO_ONE = {"insight_check", "closed_book", "necessity_check", "difficulty_check", "safety_check",
              "fact_queries", "dialogues", "distractors"}


def stage_stats(cfg: RoleMemoConfig, name: str) -> dict[str, Any]:
    store = StageStore(cfg.out, name)
    done = store.read("done")
    rejects = store.read("rejects", ["reason"])
    total = lambda col: int(pc.sum(done.column(col)).as_py() or 0) if len(done) else 0  # noqa: E731
    inputs, kept, rejected = len(done), total("n_kept"), total("n_rejected")
    reasons = collections.Counter(rejects.column("reason").to_pylist())
    stats = {
        "inputs": inputs, "kept": kept, "rejected": rejected, "rejected_by_reason": dict(reasons.most_common()),
        "llm_calls": total("calls"), "llm_attempts": total("attempts"), "prompt_tokens": total("prompt_tokens"),
        "completion_tokens": total("completion_tokens"),
        "wall_s": round(sum(r.get("wall_s", 0.0) for r in store.runs()), 2),
    }
    if name in ONE_TO_ONE:
        stats["pass_rate"] = round(kept / inputs, 4) if inputs else None
    return stats


def _histogram(values: list[int], path: Path, target: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(values, bins=min(30, max(5, len(values))), color="#4477aa")
    ax.axvline(target, color="#cc3311", linestyle="--", label=f"target {target:,}")
    ax.set_xlabel("history length (tokens)")
    ax.set_ylabel("histories")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(cfg: RoleMemoConfig, personas: frozenset[str], errors: list[dict[str, Any]],
                 dataset: dict[str, Any]) -> dict[str, Any]:
    out = Path(cfg.out)
    stages = {s.name: stage_stats(cfg, s.name) for s in STAGES}
    stages["histories"] = stage_stats(cfg, "histories")
    lengths = dataset["history_tokens"]
    hist = {"count": len(lengths), "target_tokens": cfg.target_tokens, "queries": dataset["queries"],
            "min": min(lengths) if lengths else 0, "median": int(statistics.median(lengths)) if lengths else 0,
            "max": max(lengths) if lengths else 0,
            "at_least_95pct_of_target": sum(1 for n in lengths if n >= 0.95 * cfg.target_tokens)}
    llm = {k: sum(s[k] for s in stages.values()) for k in ("llm_calls", "llm_attempts", "prompt_tokens",
                                                           "completion_tokens")}
    llm["wall_s"] = round(sum(r["wall_s"] for r in read_jsonl(out / "runs.jsonl")), 2)
    stats = {"personas": {"valid": len(personas), "invalid": len(errors), "invalid_records": errors[:200],
                          "with_history": len(lengths)},
             "stages": stages, "histories": hist, "totals": llm}
    (out / "stats.json").write_text(json.dumps(stats, indent=2), encoding="utf-8")
    if lengths:
        _histogram(lengths, out / "history_lengths.png", cfg.target_tokens)
    (out / "report.md").write_text(_markdown(stats), encoding="utf-8")
    return stats


def _markdown(stats: dict[str, Any]) -> str:
    p, h, t = stats["personas"], stats["histories"], stats["totals"]
    lines = [
        "# RoleMemo-style synthesis report",
        "",
        f"Personas: {p['valid']} valid, {p['invalid']} invalid, {p['with_history']} with a history.",
        "",
        "| stage | inputs | kept | rejected | pass rate | LLM calls | attempts | tokens in | tokens out | wall s "
        "| top reject reasons |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, s in stats["stages"].items():
        rate = "" if s.get("pass_rate") is None else f"{s['pass_rate']:.2f}"
        reasons = ", ".join(f"{r} ({n})" for r, n in list(s["rejected_by_reason"].items())[:3])
        lines.append(
            f"| {name} | {s['inputs']} | {s['kept']} | {s['rejected']} | {rate} | {s['llm_calls']} | "
            f"{s['llm_attempts']} | {s['prompt_tokens']} | {s['completion_tokens']} | {s['wall_s']} | {reasons} |"
        )
    lines += [
        "",
        f"Totals: {t['llm_calls']} LLM calls ({t['llm_attempts']} attempts), "
        f"{t['prompt_tokens']:,} prompt and {t['completion_tokens']:,} completion tokens; "
        f"job wall time {t['wall_s']} s "
        "(in stream mode stages overlap: a stage's wall s is the span in which its outputs arrived).",
        "",
        "## Histories",
        "",
        f"{h['count']} histories, {h['queries']} queries; length in tokens: min {h['min']:,}, median "
        f"{h['median']:,}, max {h['max']:,} (target {h['target_tokens']:,}; "
        f"{h['at_least_95pct_of_target']} reach 95 % of it).",
        "",
        "![history lengths](history_lengths.png)" if h["count"] else "(no histories)",
        "",
    ]
    if p["invalid_records"]:
        lines += (
            ["## Invalid persona records", ""]
            + [
                f"- {e['file']}: record {e['record']}: "
                f"{('field ' + repr(e['field']) + ': ') if e['field'] else ''}{e['reason']}"
                for e in p["invalid_records"]
            ]
            + [""]
        )
    return "\n".join(lines)
