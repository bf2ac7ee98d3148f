"""Streaming JSON readers: large public files (LongMemEval _m is ~2.7 GB) never load whole."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ijson

from mnemoray.loaders.errors import DatasetError


def _describe(err: Exception) -> str:
    text = str(err).strip() or type(err).__name__
    if "premature" in text.lower() or "incomplete" in text.lower():
        return f"truncated or malformed JSON ({text})"
    return f"malformed JSON ({text})"


def iter_array(path: Path, prefix: str = "item") -> Iterator[Any]:
    """Yield the elements of a JSON array (at `prefix`) one by one."""
    with open(path, "rb") as f:
        try:
            yield from ijson.items(f, prefix, use_float=True)
        except (ijson.JSONError, ijson.IncompleteJSONError, ValueError) as err:
            raise DatasetError(path, None, None, _describe(err)) from None


def iter_object(path: Path, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yield the key/value pairs of a JSON object (at `prefix`) one by one."""
    with open(path, "rb") as f:
        try:
            yield from ijson.kvitems(f, prefix, use_float=True)
        except (ijson.JSONError, ijson.IncompleteJSONError, ValueError) as err:
            raise DatasetError(path, None, None, _describe(err)) from None


def top_level_kind(path: Path) -> str:
    """'array', 'object' or 'other', from the first non-space byte."""
    with open(path, "rb") as f:
        while True:
            ch = f.read(1)
            if not ch:
                return "other"
            if not ch.isspace():
                return {b"[": "array", b"{": "object"}.get(ch, "other")


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    import json

    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as err:
                raise DatasetError(path, f"line {lineno}", None, f"malformed JSON ({err.msg})") from None
