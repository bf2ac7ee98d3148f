"""A deterministic valid instance of a JSON schema, for the zero-fault test endpoint.

Covers the keywords pydantic and hand-written response schemas use ($ref/$defs, anyOf,
oneOf, allOf, enum, const, type lists, object/array/string/number bounds, common string
formats). It is instant and needs no extra dependency; callers validate the result and
treat a schema it cannot satisfy (e.g. `pattern`) as unsupported.
"""

from __future__ import annotations

import contextvars
import math
import random
from typing import Any

_FORMATS = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00Z",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "127.0.0.1",
}


_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
_WORDS = tuple(a + b for a in _SYLLABLES for b in _SYLLABLES)  # 4,900 distinct made-up words
_RNG: contextvars.ContextVar[random.Random | None] = contextvars.ContextVar("instance_rng", default=None)


class UnsupportedSchema(ValueError):
    """The schema uses a keyword this generator cannot satisfy."""


def instance_for(schema: dict[str, Any] | bool, salt: str | None = None) -> Any:
    """Return a value valid under `schema` (deterministic: same schema and salt, same value).

    Without a salt every string is a fixed word; with one, strings are pseudo-random words
    drawn from the salt, so different requests get different (meaningless) texts.
    """
    root = schema if isinstance(schema, dict) else {}
    token = _RNG.set(random.Random(salt) if salt is not None else None)
    try:
        return _gen(schema, root, depth=0)
    finally:
        _RNG.reset(token)


def _resolve(ref: str, root: dict[str, Any]) -> Any:
    if not ref.startswith("#/"):
        raise UnsupportedSchema(f"only local $ref is supported, got {ref!r}")
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _gen(schema: dict[str, Any] | bool, root: dict[str, Any], depth: int) -> Any:
    if schema is True or schema == {}:
        return "x"
    if schema is False:
        raise UnsupportedSchema("schema `false` has no instance")
    if depth > 32:
        raise UnsupportedSchema("schema nests too deeply (recursive $ref?)")
    if "$ref" in schema:
        target = _resolve(schema["$ref"], root)
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        return _gen({**target, **rest} if rest else target, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    if "pattern" in schema or "not" in schema:
        raise UnsupportedSchema("`pattern` and `not` are not supported")
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = schema[key]
            # Prefer a non-null branch: it shows more of the structure.
            chosen = next((o for o in options if o.get("type") != "null"), options[0])
            base = {k: v for k, v in schema.items() if k != key}
            return _gen({**base, **chosen}, root, depth + 1)
    if "allOf" in schema:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            part = _resolve(part["$ref"], root) if "$ref" in part else part
            for k, v in part.items():
                if k in ("properties",) and k in merged:
                    merged[k] = {**merged[k], **v}
                elif k == "required" and k in merged:
                    merged[k] = sorted(set(merged[k]) | set(v))
                else:
                    merged[k] = v
        return _gen(merged, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((t for t in kind if t != "null"), kind[0] if kind else None)
    if kind is None:
        kind = _infer_type(schema)
    maker = _MAKERS.get(kind)
    if maker is None:
        raise UnsupportedSchema(f"unknown type {kind!r}")
    return maker(schema, root, depth)


def _infer_type(schema: dict[str, Any]) -> str:
    if "properties" in schema or "required" in schema or "additionalProperties" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    if "minimum" in schema or "maximum" in schema:
        return "number"
    return "string"


def _object(schema: dict[str, Any], root: dict[str, Any], depth: int) -> dict[str, Any]:
    props: dict[str, Any] = schema.get("properties", {})
    required = list(schema.get("required", []))
    cap = schema.get("maxProperties", math.inf)
    names = required + [n for n in props if n not in required]
    out: dict[str, Any] = {}
    for name in names:
        if len(out) >= cap and name not in required:
            break
        sub = props.get(name)
        if sub is None:
            extra = schema.get("additionalProperties", True)
            sub = extra if isinstance(extra, dict) else {}
        out[name] = _gen(sub, root, depth + 1)
    extra = schema.get("additionalProperties", True)
    filler = 0
    while len(out) < schema.get("minProperties", 0):
        if extra is False:
            raise UnsupportedSchema("minProperties exceeds the declared properties")
        out[f"extra_{filler}"] = _gen(extra if isinstance(extra, dict) else {}, root, depth + 1)
        filler += 1
    return out


def _array(schema: dict[str, Any], root: dict[str, Any], depth: int) -> list[Any]:
    prefix = schema.get("prefixItems", [])
    items = schema.get("items", {})
    low = schema.get("minItems", 0)
    high = schema.get("maxItems", math.inf)
    count = min(max(low, len(prefix), 1), high)
    out = [_gen(prefix[i], root, depth + 1) if i < len(prefix) else _gen(items, root, depth + 1) for i in range(count)]
    if schema.get("uniqueItems") and len(out) > 1 and len({repr(v) for v in out}) < len(out):
        raise UnsupportedSchema("uniqueItems with more than one item is not supported")
    return out


def _words(rng: random.Random, low: int, high: float) -> str:
    cap = int(min(high, 160))
    want = max(low, rng.randint(max(1, cap // 2), max(1, cap)))
    words: list[str] = []
    while len(" ".join(words)) < want:
        words.append(rng.choice(_WORDS))
    return " ".join(words)


def _string(schema: dict[str, Any], root: dict[str, Any], depth: int) -> str:
    low = schema.get("minLength", 0)
    high = schema.get("maxLength", math.inf)
    rng = _RNG.get()
    fmt = schema.get("format", "")
    text = _words(rng, low, high) if rng is not None and fmt not in _FORMATS else _FORMATS.get(fmt, "text")
    if len(text) < low:
        text = text + "x" * (low - len(text))
    if len(text) > high:
        text = text[: int(high)]
    return text


def _number(schema: dict[str, Any], root: dict[str, Any], depth: int, integer: bool = False) -> float | int:
    low = schema.get("minimum", schema.get("exclusiveMinimum", -math.inf))
    high = schema.get("maximum", schema.get("exclusiveMaximum", math.inf))
    value: float = 1
    if "exclusiveMinimum" in schema and not isinstance(schema["exclusiveMinimum"], bool):
        low = schema["exclusiveMinimum"] + (1 if integer else 1e-6)
    if "exclusiveMaximum" in schema and not isinstance(schema["exclusiveMaximum"], bool):
        high = schema["exclusiveMaximum"] - (1 if integer else 1e-6)
    if value < low:
        value = math.ceil(low) if integer else low
    if value > high:
        value = math.floor(high) if integer else high
    step = schema.get("multipleOf")
    if step:
        value = math.ceil(low / step) * step if low > -math.inf else 0
    return int(value) if integer else value


_MAKERS: dict[str, Any] = {
    "object": _object,
    "array": _array,
    "string": _string,
    "number": _number,
    "integer": lambda s, r, d: _number(s, r, d, integer=True),
    "boolean": lambda s, r, d: True,
    "null": lambda s, r, d: None,
}
