"""`mnemoray llm`: run a JSONL file of chat requests through any engine.

Input lines: {"id", "messages", optional "params", "seed", "json_schema", "metadata"}.
Output lines: {"id", "text", "parsed", "error", "error_kind", "usage"}, one per input
line in the same order; failures are written too, with their reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError

from mnemoray.cli.common import fail, friendly_errors, json_object
from mnemoray.config import validate
from mnemoray.config.llm import EngineConfig, load_engine_config
from mnemoray.llm.registry import build_engine
from mnemoray.llm.structured import generate_structured
from mnemoray.llm.types import ChatRequest, ChatResult, close_engine

app = typer.Typer(help="Generate with an LLM engine (hf, openai, vllm).", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Generate with an LLM engine (hf, openai, vllm)."""


def read_requests(path: Path, schema: dict[str, Any] | None, max_tokens: int | None) -> list[ChatRequest]:
    """Parse every line first, so a malformed line fails fast with file:line before any generation."""
    requests: list[ChatRequest] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            data = json_object(line, f"{path}:{lineno}")
            try:
                req = ChatRequest.model_validate(data)
            except ValidationError as err:
                first = err.errors()[0]
                loc = ".".join(str(p) for p in first.get("loc", ())) or "(record)"
                fail(f"{path}:{lineno}: field '{loc}': {first.get('msg')}")
            if not req.messages:
                fail(f"{path}:{lineno}: field 'messages': must hold at least one message")
            updates: dict[str, Any] = {}
            if schema is not None and req.json_schema is None:
                updates["json_schema"] = schema
            if max_tokens is not None:
                updates["params"] = req.params.model_copy(update={"max_tokens": max_tokens})
            requests.append(req.model_copy(update=updates) if updates else req)
    return requests


def _engine_config(engine: str | None, model: str | None, base_url: str | None, llm: Path | None,
                   overrides: list[str]) -> EngineConfig:
    flags = {k: v for k, v in {"engine": engine, "model": model, "base_url": base_url}.items() if v is not None}
    if llm is not None:
        cfg = load_engine_config(llm, overrides)
        return validate(EngineConfig, {**cfg.model_dump(), **flags}, source="command line")
    if engine is None:
        fail("give --engine (and --model), or an engine config with --llm")
    cfg = validate(EngineConfig, flags, source="command line")
    return load_engine_config(None, overrides, base=cfg.model_dump()) if overrides else cfg


def _line(result: ChatResult) -> str:
    parsed = result.parsed.model_dump(mode="json") if hasattr(result.parsed, "model_dump") else result.parsed
    return json.dumps({
        "id": result.id,
        "text": result.text,
        "parsed": parsed,
        "error": result.error,
        "error_kind": result.error_kind,
        "usage": result.usage.model_dump(),
    }, ensure_ascii=False)


@app.command("generate")
@friendly_errors
def generate(
    input: Path = typer.Option(..., "--input", help="requests, one JSON object per line"),
    out: Path = typer.Option(..., help="results JSONL, one line per request in input order"),
    engine: str | None = typer.Option(None, help="hf, openai or vllm (overrides --llm)"),
    model: str | None = typer.Option(None, help="checkpoint folder (hf, vllm) or served model name (openai)"),
    base_url: str | None = typer.Option(None, help="openai: endpoint, e.g. http://127.0.0.1:8000/v1"),
    llm: Path | None = typer.Option(None, help="engine config YAML, e.g. configs/llm/tiny_local.yaml"),
    json_schema: Path | None = typer.Option(None, help="JSON schema file for requests that carry none"),
    max_tokens: int | None = typer.Option(None, min=1, help="max_tokens for every request (overrides params)"),
    chunk: int = typer.Option(256, min=1, help="requests handed to the engine at a time"),
    override: list[str] = typer.Option([], "--set", help="engine config override, key=value (repeatable)"),
) -> None:
    """Generate a completion (or a typed failure) for every request in --input."""
    schema = None
    if json_schema is not None:
        try:
            schema = json.loads(json_schema.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            fail(f"{json_schema}: invalid JSON schema file ({err.msg} at line {err.lineno})")
        if not isinstance(schema, dict):
            fail(f"{json_schema}: a JSON schema must be an object")
    requests = read_requests(input, schema, max_tokens)
    cfg = _engine_config(engine, model, base_url, llm, override)
    try:
        eng = build_engine(cfg)
    except (OSError, ValueError, RuntimeError, ImportError) as err:
        fail(f"cannot start the {cfg.engine} engine: {err}")
    out.parent.mkdir(parents=True, exist_ok=True)
    ok = 0
    try:
        with out.open("w", encoding="utf-8") as fh:
            for start in range(0, len(requests), chunk):
                for result in generate_structured(eng, requests[start : start + chunk], cfg.structured_retries):
                    ok += result.ok
                    fh.write(_line(result) + "\n")
                fh.flush()
    finally:
        close_engine(eng)  # pooled connections, a vLLM engine process: released before exit
    typer.echo(f"{len(requests)} requests: {ok} ok, {len(requests) - ok} failed -> {out}")
