"""Entry point of the `mnemoray` command."""

from __future__ import annotations

import typer

from mnemoray.cli import (
    config_cmd,
    data_cmd,
    eval_cmd,
    llm_cmd,
    memory_cmd,
    model_cmd,
    pipeline_cmd,
    serve_cmd,
    synth_cmd,
    train_cmd,
)

app = typer.Typer(
    name="mnemoray",
    help="Persona-aware long-term memory for LLM agents on Ray.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(eval_cmd.app, name="eval")
app.add_typer(data_cmd.app, name="data")

for _group, _name in (
    (llm_cmd, "llm"),
    (model_cmd, "model"),
    (serve_cmd, "serve"),
    (memory_cmd, "memory"),
    (train_cmd, "train"),
    (synth_cmd, "synth"),
    (config_cmd, "config"),
    (pipeline_cmd, "pipeline"),
):
    app.add_typer(_group.app, name=_name)


if __name__ == "__main__":
    app()
