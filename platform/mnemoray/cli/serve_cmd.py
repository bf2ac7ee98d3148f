"""`mnemoray serve`: run Ray Serve applications from the command line."""

from __future__ import annotations

from pathlib import Path

import typer

from mnemoray.cli.common import fail, friendly_errors, json_object

app = typer.Typer(help="Serve models and services on Ray Serve.", no_args_is_help=True)


@app.command("llm")
@friendly_errors
def llm(
    model: str = typer.Option(..., help="checkpoint folder (hf) or model source (vllm)"),
    port: int = typer.Option(8000, help="HTTP port"),
    host: str = typer.Option("127.0.0.1", help="bind address; 0.0.0.0 exposes it to the network"),
    engine: str = typer.Option("hf", help="a servable engine: hf (transformers, CPU or GPU) or vllm (needs vLLM)"),
    model_id: str = typer.Option(None, help="name clients pass as `model` (default: folder name)"),
    max_batch_size: int = typer.Option(16, min=1, help="@serve.batch size (hf)"),
    batch_wait_timeout_s: float = typer.Option(0.05, min=0, help="how long a batch waits to fill (hf)"),
    no_batching: bool = typer.Option(False, "--no-batching", help="one request at a time (hf baseline)"),
    num_replicas: int = typer.Option(1, min=1),
    device: str = typer.Option("cpu"),
    address: str = typer.Option(None, help="Ray address to join (default: start local Ray)"),
    engine_kwargs: str = typer.Option(
        None,
        help='vllm: engine arguments as a JSON object, e.g. \'{"tensor_parallel_size": 2, "max_model_len": 8192}\'',
    ),
) -> None:
    """Start the OpenAI-compatible endpoint (/v1/models, /v1/chat/completions); Ctrl-C stops it."""
    from mnemoray.llm.registry import ENGINES

    servable = [s.name for s in ENGINES if s.serve_path is not None]
    if engine not in servable:
        fail(f"unknown engine {engine!r}; use one of {servable}")
    spec = ENGINES.spec(engine)
    kwargs = _engine_kwargs(engine_kwargs, spec.name, spec.serve_path == "ray_serve_llm")
    if spec.missing():
        fail(spec.missing())
    if spec.model_source == "folder" and not Path(model).expanduser().is_dir():
        fail(f"{model}: no such model folder")
    if spec.model_source == "folder" or Path(model).expanduser().is_dir():
        model = str(Path(model).expanduser())
    from mnemoray.distributed.serve.llm_app import LLMAppConfig, serve_until_stopped

    cfg = LLMAppConfig(
        model=model,
        engine=engine,
        model_id=model_id,
        batching=not no_batching,
        max_batch_size=max_batch_size,
        batch_wait_timeout_s=batch_wait_timeout_s,
        num_replicas=num_replicas,
        device=device,
        engine_kwargs=kwargs,
    )
    serve_until_stopped(cfg, port, host, address,
                        ready=lambda url: typer.echo(f"serving {cfg.served_id()!r} at {url} (Ctrl-C to stop)"))


def _engine_kwargs(text: str | None, engine: str, takes_kwargs: bool) -> dict | None:
    """`--engine-kwargs` as a dict, refused with a clear message before Ray starts."""
    if text is None:
        return None
    if not takes_kwargs:
        fail(f"--engine-kwargs does not apply to --engine {engine}")
    return json_object(text, "--engine-kwargs")


@app.command("memory")
@friendly_errors
def memory(
    config: Path = typer.Option(..., help="service config, e.g. configs/serve/memory_local.yaml"),
    port: int = typer.Option(None, help="HTTP port (default: the config's)"),
    host: str = typer.Option(None, help="bind address (default: the config's)"),
    address: str = typer.Option(None, help="Ray address to join (default: start local Ray)"),
    override: list[str] = typer.Option(None, "--set", help="key=value settings of the config (repeatable)"),
) -> None:
    """Start the multi-tenant memory service (memory API, OpenAI-compatible chat); SIGTERM or Ctrl-C stops it."""
    from mnemoray.config import load_config
    from mnemoray.config.service import MemoryServiceConfig
    from mnemoray.service.tenants import load_admin_key

    extra = list(override or [])
    if port is not None:
        extra.append(f"port={port}")
    if host is not None:
        extra.append(f"host={host}")
    cfg = load_config(MemoryServiceConfig, config, extra)
    from mnemoray.distributed.serve.memory_app import serve_memory_until_stopped
    from mnemoray.distributed.serve.memory_model import check_memory_model

    try:
        load_admin_key(cfg.admin_key_file)
        check_memory_model(cfg)
    except (ValueError, RuntimeError) as err:
        fail(str(err))

    serve_memory_until_stopped(cfg, address, ready=lambda url: typer.echo(
        f"memory service ({cfg.memory.name} for new tenants) at {url}; data in {cfg.data_dir} (Ctrl-C to stop)"))
