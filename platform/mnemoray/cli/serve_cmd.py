"""`mnemoray serve`: run Ray Serve applications from the command line."""

from __future__ import annotations

import signal
import threading
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
    engine: str = typer.Option("hf", help="hf (transformers, CPU or GPU) or vllm (needs vLLM)"),
    model_id: str = typer.Option(None, help="name clients pass as `model` (default: folder name)"),
    max_batch_size: int = typer.Option(16, min=1, help="@serve.batch size (hf)"),
    batch_wait_timeout_s: float = typer.Option(0.05, min=0, help="how long a batch waits to fill (hf)"),
    no_batching: bool = typer.Option(False, "--no-batching", help="one request at a time (hf baseline)"),
    num_replicas: int = typer.Option(1, min=1),
    device: str = typer.Option("cpu"),
    address: str = typer.Option(None, help="Ray address to join (default: start local Ray)"),
    engine_kwargs: str = typer.Option(
        None, help='vllm: engine arguments as a JSON object, e.g. \'{"tensor_parallel_size": 2, "max_model_len": 8192}\''
    ),
) -> None:
    """Start the OpenAI-compatible endpoint (/v1/models, /v1/chat/completions); Ctrl-C stops it."""
    import ray
    from ray import serve

    from mnemoray.pipelines.ray_runtime import WORKER_ENV
    from mnemoray.serving.llm_app import LLMAppConfig, require_vllm, run_llm_app

    if engine not in ("hf", "vllm"):
        fail(f"unknown engine {engine!r}; use hf or vllm")
    kwargs = _engine_kwargs(engine_kwargs, engine)
    if engine == "vllm":
        try:
            require_vllm()
        except RuntimeError as err:
            fail(str(err))
    if engine == "hf" and not Path(model).expanduser().is_dir():
        fail(f"{model}: no such model folder")
    cfg = LLMAppConfig(
        model=str(Path(model).expanduser()) if engine == "hf" else model,
        engine=engine,
        model_id=model_id,
        batching=not no_batching,
        max_batch_size=max_batch_size,
        batch_wait_timeout_s=batch_wait_timeout_s,
        num_replicas=num_replicas,
        device=device,
        engine_kwargs=kwargs,
    )
    ray.init(address=address, ignore_reinit_error=True, runtime_env={"env_vars": WORKER_ENV})
    # Right after ray.init (which installs Ray's own fatal-signal handler, aborting on
    # SIGTERM) and before the app deploys: the HTTP proxy answers before serve.run
    # returns, and a SIGTERM sent then (a job runner stopping us) must still shut down
    # cleanly. A SIGTERM inside ray.init itself still meets Ray's handler.
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        url = run_llm_app(cfg, port=port, host=host)
        typer.echo(f"serving {cfg.served_id()!r} at {url} (Ctrl-C to stop)")
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
        ray.shutdown()


def _engine_kwargs(text: str | None, engine: str) -> dict | None:
    """`--engine-kwargs` as a dict, refused with a clear message before Ray starts."""
    if text is None:
        return None
    if engine != "vllm":
        fail("--engine-kwargs applies to --engine vllm only")
    return json_object(text, "--engine-kwargs")
