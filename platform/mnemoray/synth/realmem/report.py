"""stats.json and report.md of `synth realmem`, computed from what is on disk (right across
resumed runs): per stage inputs / kept / rejected by reason, LLM calls and tokens; turns per
session, session ends by reason, queries, time-check regenerations; history lengths (plot)."""

from __future__ import annotations

import collections
import json
import statistics
from pathlib import Path
from typing import Any

from mnemoray.synth.realmem.machine import STAGES
from mnemoray.synth.report import stage_stats
from mnemoray.synth.store import StageStore, read_jsonl


def _spread(values: list[int]) -> dict[str, Any]:
    if not values:
        return {"count": 0, "min": 0, "median": 0, "max": 0}
    return {"count": len(values), "min": min(values), "median": int(statistics.median(values)), "max": max(values)}


def _plot(values: list[int], path: Path, target: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(values, bins=min(30, max(5, len(values))), color="#228833")
    ax.axvline(target, color="#cc3311", linestyle="--", label=f"target {target:,}")
    ax.set_xlabel("history length (tokens)")
    ax.set_ylabel("personas")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(cfg: Any, n_personas: int, errors: list[dict[str, Any]]) -> dict[str, Any]:
    out = Path(cfg.out)
    stages = {name: stage_stats(cfg, name) for name in STAGES}
    turns, ends, regenerated, queries = [], collections.Counter(), collections.Counter(), 0
    for s in StageStore(out, "sessions").iter_records():
        turns.append(s["turns"])
        ends[s["end_reason"]] += 1
        queries += s["queries"]
        for reason in s["regenerated_for"]:
            regenerated[reason] += 1
    histories = list(StageStore(out, "histories").iter_records())
    lengths = [h["tokens"] for h in histories]
    llm = {k: sum(s[k] for s in stages.values())
           for k in ("llm_calls", "llm_attempts", "prompt_tokens", "completion_tokens")}
    llm["wall_s"] = round(sum(r.get("wall_s", 0.0) for r in read_jsonl(out / "runs.jsonl")), 2)
    stats = {
        "personas": {"valid": n_personas, "invalid": len(errors), "invalid_records": errors[:200],
                     "with_history": len(histories)},
        "stages": stages,
        "sessions": {"turns": _spread(turns), "ends_by_reason": dict(ends.most_common()), "queries": queries,
                     "regenerated_by_reason": dict(regenerated)},
        "histories": {**_spread(lengths), "target_tokens": cfg.target_tokens, "queries": queries,
                      "reached_target": sum(1 for n in lengths if n >= cfg.target_tokens),
                      "sessions": sum(h["sessions"] for h in histories),
                      "files": sorted(f"{h['file_stem']}_dialogues_256k.json" for h in histories)},
        "totals": llm,
    }
    (out / "stats.json").write_text(json.dumps(stats, indent=2), encoding="utf-8")
    if lengths:
        _plot(lengths, out / "history_lengths.png", cfg.target_tokens)
    (out / "report.md").write_text(_markdown(stats), encoding="utf-8")
    return stats


def notes(stats: dict[str, Any]) -> list[str]:
    """What a reader must know before using the dataset: histories short of the target, no query turns."""
    h, out = stats["histories"], []
    short = h["count"] - h.get("reached_target", h["count"])
    if short:
        out.append(f"{short} of {h['count']} histories ended below the target of {h['target_tokens']:,} tokens: "
                   "their personas ran out of planned sessions (more come from plan.projects, plan.phases and "
                   "plan.max_sessions_per_event; one phase gives 3-5 events).")
    if h["count"] and not stats["sessions"]["queries"]:
        out.append("No query turns: no answer cited an earlier session's memory, so `eval retrieval` and "
                   "`eval realmem-judge` have nothing to score (a tiny random model extracts no memory points).")
    return out


def _markdown(stats: dict[str, Any]) -> str:
    p, s, h, t = stats["personas"], stats["sessions"], stats["histories"], stats["totals"]
    lines = ["# RealMem-style synthesis report", "",
             f"Personas: {p['valid']} valid, {p['invalid']} invalid, {p['with_history']} with a history.", "",
             *[f"**Note**: {n}\n" for n in notes(stats)],
             "| stage | inputs | kept | rejected | LLM calls | attempts | tokens in | tokens out "
             "| top reject reasons |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, st in stats["stages"].items():
        reasons = ", ".join(f"{r} ({n})" for r, n in list(st["rejected_by_reason"].items())[:3])
        lines.append(f"| {name} | {st['inputs']} | {st['kept']} | {st['rejected']} | {st['llm_calls']} | "
                     f"{st['llm_attempts']} | {st['prompt_tokens']} | {st['completion_tokens']} | {reasons} |")
    ends = ", ".join(f"{r}: {n}" for r, n in s["ends_by_reason"].items()) or "none"
    regen = ", ".join(f"{r}: {n}" for r, n in s["regenerated_by_reason"].items()) or "none"
    lines += ["", f"Totals: {t['llm_calls']} LLM calls ({t['llm_attempts']} attempts), {t['prompt_tokens']:,} prompt "
              f"and {t['completion_tokens']:,} completion tokens; job wall time {t['wall_s']} s.", "",
              "## Sessions", "",
              f"{s['turns']['count']} sessions; turns per session min {s['turns']['min']}, median "
              f"{s['turns']['median']}, max {s['turns']['max']}. Ends: {ends}. {s['queries']} query turns. "
              f"Regenerated by the time check: {regen}.", "",
              "## Histories", "",
              f"{h['count']} histories ({h['sessions']} sessions); tokens min {h['min']:,}, median {h['median']:,}, "
              f"max {h['max']:,} (target {h['target_tokens']:,}, reached by {h['reached_target']}).", "",
              "![history lengths](history_lengths.png)" if h["count"] else "(no histories)", ""]
    if p["invalid_records"]:
        lines += ["## Invalid persona records", ""] + [
            f"- {e['file']}: record {e['record']}: {('field ' + repr(e['field']) + ': ') if e['field'] else ''}"
            f"{e['reason']}" for e in p["invalid_records"]] + [""]
    return "\n".join(lines)
