"""Prompt templates and JSON schemas of the memory-model calls, read from package data.

Each call `<framework>/<name>` has `<name>.system.txt`, `<name>.user.txt` (with `$field`
placeholders, filled by `string.Template` so braces in dialogue text are harmless) and
`<name>.schema.json`. Keeping them as files lets prompts be edited and versioned without
touching code; `clamp_schema` then tightens string and array caps from the config so small
models can always finish a valid JSON answer within max_tokens.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from string import Template
from typing import Any

from mnemoray.llm.types import ChatMessage


@dataclass(frozen=True)
class PromptSpec:
    framework: str
    name: str
    system: str
    user: Template
    schema: dict[str, Any]

    def messages(self, **fields: Any) -> list[ChatMessage]:
        """System + user messages; every placeholder must be given (a typo fails loudly)."""
        user = self.user.substitute({k: str(v) for k, v in fields.items()})
        return [ChatMessage(role="system", content=self.system), ChatMessage(role="user", content=user)]


@cache
def load_prompt(framework: str, name: str) -> PromptSpec:
    base = resources.files("mnemoray").joinpath("resources", "prompts", framework)
    system = base.joinpath(f"{name}.system.txt").read_text(encoding="utf-8").strip()
    user = base.joinpath(f"{name}.user.txt").read_text(encoding="utf-8").strip()
    schema = json.loads(base.joinpath(f"{name}.schema.json").read_text(encoding="utf-8"))
    return PromptSpec(framework, name, system, Template(user), schema)


def edit_schema(schema: dict[str, Any], edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """A deep copy of `schema` with `edit` applied to every object node, outermost first."""
    out = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            edit(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(out)
    return out


def clamp_schema(schema: dict[str, Any], max_chars: int, max_items: int) -> dict[str, Any]:
    """A copy with every maxLength ≤ max_chars and every maxItems ≤ max_items (minima kept valid)."""

    def clamp(node: dict[str, Any]) -> None:
        if node.get("type") == "string":
            node["maxLength"] = min(node.get("maxLength", max_chars), max_chars)
            if node.get("minLength", 0) > node["maxLength"]:
                node["minLength"] = node["maxLength"]
        if node.get("type") == "array":
            node["maxItems"] = max(min(node.get("maxItems", max_items), max_items), node.get("minItems", 0))

    return edit_schema(schema, clamp)


def fit(text: str, budget: int, marker: str = "[... earlier part left out ...]\n") -> str:
    """Keep the end of `text` within `budget` chars (recent memory matters most in a prompt)."""
    if len(text) <= budget:
        return text
    if budget <= len(marker):
        return text[len(text) - budget:] if budget > 0 else ""
    return marker + text[len(text) - (budget - len(marker)):]


def restrict_ids(schema: dict[str, Any], key: str, allowed: list[str]) -> dict[str, Any]:
    """A copy where arrays under property `key` may only hold `allowed` handles (none: empty).

    Sent per call, so constrained decoding cannot invent ids; the op parser still checks them.
    """

    def restrict(node: dict[str, Any]) -> None:
        props = node.get("properties")
        if isinstance(props, dict) and isinstance(props.get(key), dict) and props[key].get("type") == "array":
            arr = props[key]
            if allowed:
                arr["items"] = {"enum": list(allowed)}
            else:
                arr["items"] = {"type": "string"}
                arr["maxItems"] = 0
                arr.pop("minItems", None)

    return edit_schema(schema, restrict)
