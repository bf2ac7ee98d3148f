"""report.md + plots of the RoleMemo recall, role-play and RealMem-judge runs (metrics.json too)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mnemoray.eval.report import fmt, plot_grouped_bars, write_run_files


def _dimension_table(summary: dict[str, Any]) -> list[str]:
    lines = ["| dimension | scale | mean | std | items scored | items unscored | runs scored | runs failed "
             "| runs not asked | clipped |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, d in summary["dimensions"].items():
        lo, hi = d["scale"]
        lines.append(f"| {name} | {lo:g}–{hi:g} | {fmt(d['mean'])} | {fmt(d['std'])} | {d['n_items_scored']} | "
                     f"{d['n_items_unscored']} | {d['n_scored']} | {d['n_failed']} | {d['n_not_asked']} | "
                     f"{d['n_clipped']} |")
    kinds = {f"{name}: {k}": n for name, d in summary["dimensions"].items() for k, n in d["failure_kinds"].items()}
    if kinds:
        lines += ["", "Judge failure kinds: " + ", ".join(f"{k} × {n}" for k, n in kinds.items())]
    return lines


def _group_table(groups: dict[str, dict[str, Any]], columns: list[str], head: str) -> list[str]:
    lines = [
        f"| {head} | n | " + " | ".join(columns) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in columns) + " |",
    ]
    for g, vals in groups.items():
        lines.append(f"| {g} | {vals['n']} | " + " | ".join(fmt(vals.get(c)) for c in columns) + " |")
    return lines


def write_rolememo_report(summary: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    k = summary["k"]
    f_name, i_name = f"fact_recall@{k}", f"insight_recall@{k}"
    groups = {"all": {**summary["metrics"], "n": summary["n_queries"]}}
    groups.update({(v.get("name") or p)[:24]: v for p, v in summary["by_persona"].items()})
    plot_grouped_bars(
        groups,
        [(f_name, f"Recall@{k} Fact"), (i_name, f"Recall@{k} Insight")],
        out / "recall_by_persona.png",
        f"{summary['memory']} on rolememo ({summary['n_queries']} queries)",
        ylabel="recall",
    )
    th, pooled = summary["thresholds"], summary["pooled"]
    lines = [
        f"# RoleMemo recall: {summary['memory']}",
        "",
        f"{summary['n_queries']} queries over {summary['n_histories']} histories; top {k} retrieved items per query; "
        f"hit when the max cosine similarity ({summary.get('similarity_model', 'all-MiniLM-L6-v2')}) to them is "
        f">= {th['fact']} (fact) or >= {th['insight']} (insight). Recall is pooled over all gold items.",
        "",
        "| metric | value | hits / gold |",
        "| --- | ---: | ---: |",
        f"| Recall@{k} Fact | {fmt(summary['metrics'][f_name])} | "
        f"{pooled['fact']['hits']} / {pooled['fact']['gold']} |",
        f"| Recall@{k} Insight | {fmt(summary['metrics'][i_name])} | {pooled['insight']['hits']} / "
        f"{pooled['insight']['gold']} |",
        "",
        "## By persona (pooled within the persona)",
        "",
        "| persona | name | n | Recall Fact | fact hits / gold | Recall Insight | insight hits / gold |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p, v in summary["by_persona"].items():
        lines.append(
            f"| {p} | {v.get('name', '')} | {v['n']} | {fmt(v[f_name])} | {v['fact_hits']} / {v['fact_gold']} | "
            f"{fmt(v[i_name])} | {v['insight_hits']} / {v['insight_gold']} |"
        )
    lines += ["", "## By insight type", ""] + _group_table(summary["by_category"], [f_name, i_name], "type")
    lines += ["", "![recall by persona](recall_by_persona.png)"]
    write_run_files(summary, out, lines)


def write_roleplay_report(summary: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    dims = list(summary["dimensions"])
    groups = {"all": {**summary["metrics"]}}
    groups.update({f"run {i} (seed {seed})": vals for i, (seed, vals) in
                   enumerate(zip(summary["judge_seeds"], summary["by_run"]))})
    plot_grouped_bars(groups, [(d, d.replace("_", " ")) for d in dims], out / "roleplay_scores.png",
                      f"{summary['memory']}: role-play judge ({summary['n_queries']} replies)", ymax=5.1)
    f = summary["failures"]
    lines = [
        f"# Role-play evaluation: {summary['memory']} on rolememo", "",
        f"{summary['n_queries']} queries over {summary['n_histories']} histories; each reply judged "
        f"{summary['judge_runs']} times (seeds {summary['judge_seeds']}); an item's score is the mean of its "
        "successful runs, a figure the mean over scored items. Scores 0–5.", "",
        "| metric | value |", "| --- | ---: |", *[f"| {k} | {fmt(v)} |" for k, v in summary["metrics"].items()], "",
        "## Counts per dimension (failures are counted, never scored as 0)", "", *_dimension_table(summary), "",
        f"- response failures (not judged): {f['response']}",
        f"- judge runs with a failure: {f['judge_calls']} of {f['judge_calls_total']}",
        f"- items without any score: {f['items_unscored']}", "",
        "## Per judge run", "", "| run | seed | " + " | ".join(dims) + " |",
        "| --- | --- | " + " | ".join("---:" for _ in dims) + " |",
        *[f"| {i} | {seed} | " + " | ".join(fmt(r[d]) for d in dims) + " |"
          for i, (seed, r) in enumerate(zip(summary["judge_seeds"], summary["by_run"]))], "",
        "## By persona", "", *_group_table(summary["by_persona"], dims, "persona"), "",
        "## By insight type", "", *_group_table(summary["by_category"], dims, "type"), "",
        "![role-play scores](roleplay_scores.png)",
    ]
    write_run_files(summary, out, lines)


def write_realmem_report(summary: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    dims = summary["dimensions"]
    scaled = {}
    for cat, vals in {"all": {**summary["metrics"]}, **summary["by_category"]}.items():
        scaled[cat[:24]] = {d: (None if vals.get(d) is None else vals[d] / dims[d]["scale"][1]) for d in dims}
    plot_grouped_bars(scaled, [(d, f"{d} (/{dims[d]['scale'][1]:g})") for d in dims], out / "realmem_scores.png",
                      f"{summary['memory']} on realmem ({summary['n_queries']} queries)", ylabel="fraction of max")
    f = summary["failures"]
    lines = [
        f"# RealMem LLM-judged evaluation: {summary['memory']}", "",
        f"{summary['n_queries']} queries over {summary['n_histories']} histories; top {summary['k']} memory items; "
        f"judge runs per item: {summary['judge_runs']} (seeds {summary['judge_seeds']}). QA score 0–3, memory recall "
        "0–1 (gold memory points covered by the retrieved memory, per-point verdicts by the judge), memory "
        "helpfulness 0–2; evidence recall = gold sessions among the retrieved items' sessions (no judge).", "",
        "| metric | value |", "| --- | ---: |", *[f"| {k} | {fmt(v)} |" for k, v in summary["metrics"].items()], "",
        "## Counts per dimension (failures are counted, never scored as 0)", "", *_dimension_table(summary), "",
        f"- answer failures (QA score not asked): {f['answer']}",
        f"- queries without gold memory points (not judged): {f['no_gold_memory']}",
        f"- judge runs with a failure: {f['judge_runs_with_failure']} of {f['judge_runs_total']}", "",
        "QA score distribution (item means rounded): " + ", ".join(
            f"{k}: {v}" for k, v in summary["qa_score_distribution"].items()), "",
        "## By category", "", *_group_table(summary["by_category"], list(dims), "category"), "",
        "## By history", "", *_group_table(summary["by_history"], list(dims), "history"), "",
        "![RealMem scores](realmem_scores.png)",
    ]
    write_run_files(summary, out, lines)
