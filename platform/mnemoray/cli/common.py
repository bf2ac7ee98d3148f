"""Shared CLI plumbing: one-line errors with exit code 2 instead of tracebacks."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from mnemoray.config import ConfigError
from mnemoray.loaders.errors import DatasetError

EXIT_BAD_INPUT = 2


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def json_object(text: str, where: str) -> dict[str, Any]:
    """`text` as a JSON object, or exit 2 with `where: <what is wrong>`."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        fail(f"{where}: invalid JSON ({err.msg} at column {err.colno})")
    if not isinstance(value, dict):
        fail(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


def friendly_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn bad-input exceptions into `error: <file>: record ...: field ...: reason` + exit 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (DatasetError, ConfigError, FileNotFoundError) as err:
            fail(str(err))
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


def flag_overrides(flags: dict[str, Any]) -> list[str]:
    """Command-line flags as `key=value` config overrides (given flags only).

    Overrides are applied after the config file, so a flag always wins over the file.
    Strings and paths are JSON-quoted so YAML parsing keeps them strings.
    """
    out = []
    for key, value in flags.items():
        if value is None or value is False:
            continue
        if isinstance(value, (str, Path)):
            value = json.dumps(str(value))
        elif isinstance(value, (list, tuple)):
            value = json.dumps(list(value))
        elif value is True:
            value = "true"
        out.append(f"{key}={value}")
    return out
