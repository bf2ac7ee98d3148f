"""`mnemoray eval`: retrieval evaluation runs, the main retrieval suite, and comparisons."""

from __future__ import annotations

from pathlib import Path

import typer

from mnemoray.cli.common import flag_overrides, friendly_errors
from mnemoray.config import RetrievalEvalConfig, RetrievalSuiteConfig, load_config

app = typer.Typer(help="Evaluate memory frameworks.", no_args_is_help=True)


def _ks(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"'{text}' is not a comma-separated list of integers") from None


@app.command("retrieval")
@friendly_errors
def retrieval(
    dataset: str = typer.Option(None, help="locomo, realmem, longmemeval, perltqa or rolememo"),
    data: Path = typer.Option(None, help="a dataset file or a folder of files"),
    memory: str = typer.Option(None, help="rag-dense, rag-bm25, rag-hybrid, or an LLM framework with --memory-bank"),
    k: str = typer.Option(None, "--k", help="cut-offs, e.g. 5,10,20"),
    out: Path = typer.Option(None, help="output folder (metrics.json, per_query.jsonl, report.md)"),
    config: Path = typer.Option(None, help="YAML config; options given here override it"),
    address: str = typer.Option(None, help="Ray cluster address (default: start local Ray)"),
    chunking: str = typer.Option(None, help="turn, pair or session"),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="process valid records and list invalid ones"),
    limit: int = typer.Option(None, help="evaluate only the first N histories"),
    memory_bank: Path = typer.Option(None, "--memory-bank", help="a folder written by `mnemoray memory build` (its banks/)"),
    overrides: list[str] = typer.Argument(None, help="key=value config overrides, e.g. memory.index.recency_weight=1"),
) -> None:
    """Score a memory framework's evidence retrieval on a public dataset."""
    extra = flag_overrides({
        "dataset": dataset, "data": data, "out": out, "limit": limit, "memory_bank": memory_bank,
        "memory.name": memory, "memory.chunking": chunking, "ks": _ks(k) if k else None,
        "ray.address": address, "skip_invalid": skip_invalid,
    }) + list(overrides or [])
    cfg = load_config(RetrievalEvalConfig, config, extra)
    from mnemoray.pipelines.retrieval_eval import run_retrieval_eval

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
    from mnemoray.pipelines.retrieval_suite import run_suite

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
    dataset: str = typer.Option(None, help="locomo, realmem, longmemeval, perltqa or rolememo"),
    data: Path = typer.Option(None, help="a dataset file or a folder of files"),
    memory: str = typer.Option(None, help="rag-dense, rag-bm25, rag-hybrid, or an LLM framework with --memory-bank"),
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
    overrides: list[str] = typer.Argument(None, help="key=value config overrides, e.g. ray.workers=1"),
) -> None:
    """Answer questions from retrieved memory with an LLM; judge (lenient + strict), F1, BLEU-1."""
    from mnemoray.pipelines.qa_eval import QAEvalConfig, run_qa_eval

    extra = flag_overrides({
        "dataset": dataset, "data": data, "memory_bank": memory_bank, "answerer": answerer, "judge": judge,
        "k": k, "limit": limit, "max_queries": max_queries, "out": out, "memory.name": memory,
        "ray.address": address, "skip_invalid": skip_invalid,
    }) + list(overrides or [])
    cfg = load_config(QAEvalConfig, config, extra)
    summary = run_qa_eval(cfg)
    m, f = summary["metrics"], summary["failures"]
    shown = ", ".join(f"{key} {'n/a' if v is None else f'{v:.3f}'}" for key, v in m.items())
    typer.echo(f"{summary['n_queries']} questions: {shown}; answer failures {f['answer']}, "
               f"judge failures {f['judge_failures']}")
    typer.echo(f"outputs in {cfg.out}/ (metrics.json, per_query.jsonl, report.md)")
