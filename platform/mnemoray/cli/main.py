"""Entry point of the `mnemoray` command."""

from __future__ import annotations

import typer

from mnemoray.cli import data_cmd, eval_cmd

app = typer.Typer(
    name="mnemoray",
    help="Persona-aware long-term memory for LLM agents on Ray.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(eval_cmd.app, name="eval")
app.add_typer(data_cmd.app, name="data")

# Further command groups (llm, model, serve, synth, memory, train) register here.
for _module, _name in (("llm_cmd", "llm"), ("model_cmd", "model"), ("serve_cmd", "serve"), ("memory_cmd", "memory"), ("train_cmd", "train")):
    try:
        _mod = __import__(f"mnemoray.cli.{_module}", fromlist=["app"])
    except ModuleNotFoundError as _err:
        if _err.name != f"mnemoray.cli.{_module}":
            raise
        continue
    app.add_typer(_mod.app, name=_name)


if __name__ == "__main__":
    app()
