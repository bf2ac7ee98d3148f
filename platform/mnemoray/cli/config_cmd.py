"""`mnemoray config`: check config files before a long job, and list what the registries offer."""

from __future__ import annotations

from pathlib import Path

import typer

from mnemoray.cli.common import fail, friendly_errors

app = typer.Typer(help="Check config files; list engines, memory frameworks, datasets, evaluations and rewards.",
                  no_args_is_help=True)


@app.command("check")
@friendly_errors
def check(
    files: list[Path] = typer.Argument(..., help="YAML files (or folders of them) to validate"),
    kind: str = typer.Option(None, help="validate every file as this kind (default: by its place under configs/)"),
) -> None:
    """Validate each file (its `base:` files included); print every invalid key; exit 2 on any."""
    from mnemoray.config.files import check_file

    paths = [p for f in files for p in (sorted(f.rglob("*.yaml")) if f.is_dir() else [f])]
    if not paths:
        fail("no YAML files given")
    bad = 0
    for path in paths:
        result = check_file(path, kind)
        if result.ok:
            typer.echo(f"ok    {path} ({result.kind})")
        else:
            bad += 1
            for error in result.errors:
                typer.echo(f"error {error}" if str(path) in error else f"error {path}: {error}", err=True)
    if bad:
        fail(f"{bad} of {len(paths)} config files are invalid")


@app.command("registry")
def registry() -> None:
    """What can be named in configs and on the command line, with each entry's capabilities."""
    from mnemoray.eval.per_history import EVALUATIONS
    from mnemoray.llm.registry import ENGINES
    from mnemoray.loaders.registry import DATASETS
    from mnemoray.memory.registry import FRAMEWORKS
    from mnemoray.rewards.registry import REWARDS
    from mnemoray.rl.environments.registry import ENVIRONMENTS
    from mnemoray.rl.rollout_registry import ROLLOUTS

    for spec in ENGINES:
        typer.echo(f"engine     {spec.name:<12} guided_json={spec.guided_json} loads_weights={spec.loads_weights} "
                   f"ray_data={spec.ray_data_path} serve={spec.serve_path}  {spec.description}")
    for spec in FRAMEWORKS:
        typer.echo(f"memory     {spec.name:<12} built_by_llm={spec.built_by_llm} uses_embedder={spec.uses_embedder}"
                   f"  {spec.description}")
    for spec in DATASETS:
        typer.echo(f"dataset    {spec.name:<12} files={spec.files}  {spec.description}")
    for spec in EVALUATIONS:
        typer.echo(f"evaluation {spec.name:<14} engines={list(spec.roles)}")
    for spec in REWARDS:
        typer.echo(f"reward     {spec.name:<14} needs_judge={spec.needs_judge}  {spec.description}")
    for spec in ENVIRONMENTS:
        typer.echo(f"rl-env     {spec.name:<14} {spec.description}")
    for spec in ROLLOUTS:
        typer.echo(f"rollout    {spec.name:<14} {spec.description}")
