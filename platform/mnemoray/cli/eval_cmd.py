"""`mnemoray eval`: retrieval, QA, RoleMemo recall, role-play and RealMem judge runs; the suite; comparisons."""

from __future__ import annotations

from pathlib import Path

import typer

from mnemoray.cli.common import flag_overrides, friendly_errors
from mnemoray.config import RetrievalEvalConfig, RetrievalSuiteConfig, load_config
from mnemoray.loaders.registry import DATASETS
from mnemoray.memory.registry import FRAMEWORKS

_MEMORY_HELP = (f"{FRAMEWORKS.help(built_by_llm=False)}, or with --memory-bank an LLM-built one: "
                f"{FRAMEWORKS.help(built_by_llm=True)}")
_SERVICE_OPTION = typer.Option(
    None, help="URL of a running `mnemoray serve memory`: memories live there, one fresh tenant per history "
    "(admin key from $MNEMORAY_ADMIN_KEY)")

app = typer.Typer(help="Evaluate memory frameworks.", no_args_is_help=True)


def _ks(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"'{text}' is not a comma-separated list of integers") from None


@app.command("retrieval")
@friendly_errors
def retrieval(
    dataset: str = typer.Option(None, help=DATASETS.help()),
    data: Path = typer.Option(None, help="a dataset file or a folder of files"),
    memory: str = typer.Option(None, help=_MEMORY_HELP),
    k: str = typer.Option(None, "--k", help="cut-offs, e.g. 5,10,20"),
    out: Path = typer.Option(None, help="output folder (metrics.json, per_query.jsonl, report.md)"),
    config: Path = typer.Option(None, help="YAML config; options given here override it"),
    address: str = typer.Option(None, help="Ray cluster address (default: start local Ray)"),
    chunking: str = typer.Option(None, help="turn, pair or session"),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="process valid records and list invalid ones"),
    limit: int = typer.Option(None, help="evaluate only the first N histories"),
    memory_bank: Path = typer.Option(
        None, "--memory-bank", help="a folder written by `mnemoray memory build` (its banks/)"
    ),
    service: str = typer.Option(
        None, help="URL of a running `mnemoray serve memory`: run through it, one fresh tenant per history "
        "(admin key from $MNEMORAY_ADMIN_KEY)"
    ),
    overrides: list[str] = typer.Argument(None, help="key=value config overrides, e.g. memory.index.recency_weight=1"),
) -> None:
    """Score a memory framework's evidence retrieval on a public dataset."""
    extra = flag_overrides({
        "dataset": dataset, "data": data, "out": out, "limit": limit, "memory_bank": memory_bank,
        "memory.name": memory, "memory.chunking": chunking, "ks": _ks(k) if k else None,
        "ray.address": address, "skip_invalid": skip_invalid, "service": service,
    }) + list(overrides or [])
    cfg = load_config(RetrievalEvalConfig, config, extra)
    from mnemoray.distributed.data.retrieval_eval import run_retrieval_eval

    summary = run_retrieval_eval(cfg)
    from mnemoray.eval.compare import print_comparison, wide_console

    console = wide_console()

    print_comparison([cfg.out], console)
    console.print(f"outputs in {cfg.out}/ (metrics.json, per_query.jsonl, report.md)")
    if summary.get("invalid_records"):
        console.print(f"[yellow]{len(summary['invalid_records'])} invalid records skipped[/yellow]")


@app.command("suite")
@friendly_errors
def suite(
    config: Path = typer.Option(Path("configs/eval/retrieval_local.yaml"), help="suite config"),
    data: Path = typer.Option(None, help="data root replacing ${data_root} (default ../shared/data)"),
    out: Path = typer.Option(None, help="output root"),
    overrides: list[str] = typer.Argument(None, help="key=value config overrides"),
) -> None:
    """The main job: every configured memory on every configured dataset, then one table."""
    from mnemoray.distributed.data.retrieval_suite import run_suite

    extra = list(overrides or [])
    if out:
        extra.append(f"out={out}")
    cfg = load_config(RetrievalSuiteConfig, config, extra)
    if data:
        cfg = cfg.model_copy(update={"runs": [r.model_copy(update={"data": _rebase(r.data, data)}) for r in cfg.runs]})
    from mnemoray.eval.compare import wide_console

    run_suite(cfg, wide_console())


def _rebase(path: Path, root: Path) -> Path:
    """Point a run's data path at the same relative location under another data root."""
    from mnemoray.config import DEFAULT_DATA_ROOT

    try:
        return Path(root) / Path(path).relative_to(DEFAULT_DATA_ROOT)
    except ValueError:
        return Path(root)


@app.command("compare")
@friendly_errors
def compare(dirs: list[Path] = typer.Argument(..., help="run folders containing metrics.json")) -> None:
    """Print runs side by side."""
    from mnemoray.eval.compare import print_comparison

    print_comparison(dirs)


@app.command("qa")
@friendly_errors
def qa(
    dataset: str = typer.Option(None, help=DATASETS.help()),
    data: Path = typer.Option(None, help="a dataset file or a folder of files"),
    memory: str = typer.Option(None, help=_MEMORY_HELP),
    memory_bank: Path = typer.Option(None, "--memory-bank", help="a folder written by `mnemoray memory build`"),
    answerer: Path = typer.Option(None, help="LLM engine config answering the questions"),
    judge: Path = typer.Option(None, help="LLM engine config judging the answers"),
    k: int = typer.Option(None, "--k", help="memory items retrieved per question (default 10)"),
    limit: int = typer.Option(None, help="evaluate only the first N histories"),
    max_queries: int = typer.Option(None, "--max-queries", help="only the first N answerable questions per history"),
    out: Path = typer.Option(None, help="output folder (metrics.json, per_query.jsonl, report.md)"),
    config: Path = typer.Option(None, help="YAML config; options given here override it"),
    address: str = typer.Option(None, help="Ray cluster address (default: start local Ray)"),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="process valid records and list invalid ones"),
    service: str = _SERVICE_OPTION,
    overrides: list[str] = typer.Argument(None, help="key=value config overrides, e.g. ray.workers=1"),
) -> None:
    """Answer questions from retrieved memory with an LLM; judge (lenient + strict), F1, BLEU-1."""
    from mnemoray.distributed.data.qa_eval import QAEvalConfig, run_qa_eval

    extra = flag_overrides({
        "dataset": dataset, "data": data, "memory_bank": memory_bank, "answerer": answerer, "judge": judge,
        "k": k, "limit": limit, "max_queries": max_queries, "out": out, "memory.name": memory,
        "ray.address": address, "skip_invalid": skip_invalid, "service": service,
    }) + list(overrides or [])
    cfg = load_config(QAEvalConfig, config, extra)
    summary = run_qa_eval(cfg)
    m, f = summary["metrics"], summary["failures"]
    shown = ", ".join(f"{key} {'n/a' if v is None else f'{v:.3f}'}" for key, v in m.items())
    typer.echo(f"{summary['n_queries']} questions: {shown}; answer failures {f['answer']}, "
               f"judge failures {f['judge_failures']}")
    typer.echo(f"outputs in {cfg.out}/ (metrics.json, per_query.jsonl, report.md)")



def _print_judged(summary: dict, out: Path) -> None:
    from mnemoray.eval.compare import print_comparison, wide_console

    print_comparison([out], wide_console())
    for name, d in (summary.get("dimensions") or {}).items():
        mean = "n/a" if d["mean"] is None else format(d["mean"], ".3f")
        typer.echo(f"{name}: mean {mean} (judge runs scored {d['n_scored']}, failed {d['n_failed']}, "
                   f"clipped {d['n_clipped']}; items scored {d['n_items_scored']}/{d['n_items']})")
    if summary.get("pooled"):
        typer.echo("pooled: " + ", ".join(f"{st} {v['hits']}/{v['gold']}" for st, v in summary["pooled"].items()))
    if summary.get("failures"):
        typer.echo("failures: " + ", ".join(f"{k} {v}" for k, v in summary["failures"].items()))
    if summary.get("invalid_records"):
        typer.echo(f"{len(summary['invalid_records'])} invalid records skipped")
    typer.echo(f"outputs in {out}/ (metrics.json, per_query.jsonl, report.md)")




@app.command("rolememo")
@friendly_errors
def rolememo(
    data: Path = typer.Option(None, help="a `mnemoray synth rolememo` run folder (or its dataset/)"),
    memory: str = typer.Option(None, help=_MEMORY_HELP),
    memory_bank: Path = typer.Option(None, "--memory-bank", help="a folder written by `mnemoray memory build`"),
    k: int = typer.Option(None, "--k", help="retrieved items per query (default 10)"),
    fact_threshold: float = typer.Option(None, "--fact-threshold", help="cosine for a fact hit (default 0.60)"),
    insight_threshold: float = typer.Option(
        None, "--insight-threshold", help="cosine for an insight hit (default 0.65)"
    ),
    limit: int = typer.Option(None, help="evaluate only the first N histories"),
    max_queries: int = typer.Option(None, "--max-queries", help="only the first N queries per history"),
    out: Path = typer.Option(None, help="output folder (metrics.json, per_query.jsonl, report.md)"),
    config: Path = typer.Option(None, help="YAML config (e.g. configs/eval/rolememo_local.yaml); flags override it"),
    address: str = typer.Option(None, help="Ray cluster address (default: start local Ray)"),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="process valid records and list invalid ones"),
    service: str = _SERVICE_OPTION,
    overrides: list[str] = typer.Argument(None, help="key=value config overrides, e.g. ray.workers=1"),
) -> None:
    """RoleMemo Recall@k Fact / Insight: max cosine of each gold fragment / insight to the top-k memory."""
    from mnemoray.config import RoleMemoRecallConfig
    from mnemoray.distributed.data.judged_evals import run_rolememo_eval

    extra = flag_overrides({
        "data": data, "memory.name": memory, "memory_bank": memory_bank, "k": k, "fact_threshold": fact_threshold,
        "insight_threshold": insight_threshold, "limit": limit, "max_queries": max_queries, "out": out,
        "ray.address": address, "skip_invalid": skip_invalid, "service": service,
    }) + list(overrides or [])
    cfg = load_config(RoleMemoRecallConfig, config, extra)
    _print_judged(run_rolememo_eval(cfg), cfg.out)


@app.command("roleplay")
@friendly_errors
def roleplay(
    data: Path = typer.Option(None, help="a `mnemoray synth rolememo` run folder (or its dataset/)"),
    memory: str = typer.Option(None, help=_MEMORY_HELP),
    memory_bank: Path = typer.Option(None, "--memory-bank", help="a folder written by `mnemoray memory build`"),
    responder: Path = typer.Option(None, help="LLM engine config playing the persona"),
    judge: Path = typer.Option(None, help="LLM engine config judging the replies"),
    judge_runs: int = typer.Option(None, "--judge-runs", help="judge calls per reply, averaged (default 3)"),
    k: int = typer.Option(None, "--k", help="retrieved items per query (default 10)"),
    limit: int = typer.Option(None, help="evaluate only the first N histories"),
    max_queries: int = typer.Option(None, "--max-queries", help="only the first N queries per history"),
    out: Path = typer.Option(None, help="output folder (metrics.json, per_query.jsonl, report.md)"),
    config: Path = typer.Option(None, help="YAML config (e.g. configs/eval/roleplay_local.yaml); flags override it"),
    address: str = typer.Option(None, help="Ray cluster address (default: start local Ray)"),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="process valid records and list invalid ones"),
    service: str = _SERVICE_OPTION,
    overrides: list[str] = typer.Argument(None, help="key=value config overrides, e.g. judge_seed=7"),
) -> None:
    """Role-play quality: in-character replies from memory, judged 0-5 on 4 dimensions, runs averaged."""
    from mnemoray.config import RolePlayEvalConfig
    from mnemoray.distributed.data.judged_evals import run_roleplay_eval

    extra = flag_overrides({
        "data": data, "memory.name": memory, "memory_bank": memory_bank, "responder": responder, "judge": judge,
        "judge_runs": judge_runs, "k": k, "limit": limit, "max_queries": max_queries, "out": out,
        "ray.address": address, "skip_invalid": skip_invalid, "service": service,
    }) + list(overrides or [])
    cfg = load_config(RolePlayEvalConfig, config, extra)
    _print_judged(run_roleplay_eval(cfg), cfg.out)


@app.command("realmem-judge")
@friendly_errors
def realmem_judge(
    data: Path = typer.Option(None, help="RealMem *_dialogues_256k.json file or folder"),
    memory: str = typer.Option(None, help=_MEMORY_HELP),
    memory_bank: Path = typer.Option(None, "--memory-bank", help="a folder written by `mnemoray memory build`"),
    answerer: Path = typer.Option(None, help="LLM engine config replying to the user"),
    judge: Path = typer.Option(None, help="LLM engine config judging answers and memory"),
    judge_runs: int = typer.Option(None, "--judge-runs", help="judge calls per item, averaged (default 1)"),
    k: int = typer.Option(None, "--k", help="retrieved items per query (default 10)"),
    limit: int = typer.Option(None, help="evaluate only the first N histories"),
    max_queries: int = typer.Option(None, "--max-queries", help="only the first N queries per history"),
    out: Path = typer.Option(None, help="output folder (metrics.json, per_query.jsonl, report.md)"),
    config: Path = typer.Option(None, help="YAML config (e.g. configs/eval/realmem_judge_local.yaml)"),
    address: str = typer.Option(None, help="Ray cluster address (default: start local Ray)"),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="process valid records and list invalid ones"),
    service: str = _SERVICE_OPTION,
    overrides: list[str] = typer.Argument(None, help="key=value config overrides, e.g. ray.workers=1"),
) -> None:
    """RealMem LLM metrics: QA score 0-3, memory recall, memory helpfulness 0-2 (+ evidence recall)."""
    from mnemoray.config import RealMemJudgeConfig
    from mnemoray.distributed.data.judged_evals import run_realmem_judge

    extra = flag_overrides({
        "data": data, "memory.name": memory, "memory_bank": memory_bank, "answerer": answerer, "judge": judge,
        "judge_runs": judge_runs, "k": k, "limit": limit, "max_queries": max_queries, "out": out,
        "ray.address": address, "skip_invalid": skip_invalid, "service": service,
    }) + list(overrides or [])
    cfg = load_config(RealMemJudgeConfig, config, extra)
    _print_judged(run_realmem_judge(cfg), cfg.out)
