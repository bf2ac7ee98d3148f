"""Loading typed configs: YAML files that may extend a `base:` file, `key.sub=value`
overrides, `${data_root}`, and validation that reports every bad key at once.

A preset states only what differs from its twin: `base: retrieval_local.yaml` at the top
of a file loads that file first (relative to this one; a list loads several in order)
and merges this file's keys over it, section by section. Lists and scalars replace.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

T = TypeVar("T", bound=BaseModel)

REPO_ROOT = Path(__file__).resolve().parents[3]
# $MNEMORAY_DATA when set: a submitted Ray job imports the package from Ray's copy of it, where
# ../shared/data does not exist (set it on the nodes or in the job's runtime_env env_vars).
DEFAULT_DATA_ROOT = Path(os.environ.get("MNEMORAY_DATA") or REPO_ROOT.parent / "shared" / "data")
BASE_KEY = "base"


class ConfigError(Exception):
    """A config file or override that does not validate; the message names every bad key."""


class StrictModel(BaseModel):
    """Unknown keys are errors (a typo must not silently fall back to a default)."""

    model_config = ConfigDict(extra="forbid")


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides (values parsed as YAML) to a nested dict."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value")
        key, value = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{part}' is not a section")
        node[parts[-1]] = _parse_value(value)
    return data


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`: sections merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_config_file(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML mapping with its `base:` files merged underneath (cycles refused)."""
    path = Path(path)
    where = path.resolve()
    if where in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, where))
        raise ConfigError(f"{path}: '{BASE_KEY}' files include each other ({chain})")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML ({err})") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    bases = loaded.pop(BASE_KEY, None)
    if bases is None:
        return loaded
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: key '{BASE_KEY}': a file name or a list of file names")
    merged: dict[str, Any] = {}
    for name in bases:
        merged = deep_merge(merged, read_config_file(path.parent / name, (*_seen, where)))
    return deep_merge(merged, loaded)


def resolve_data_root(data: Any) -> Any:
    """`${data_root}` in strings means $MNEMORAY_DATA, else ../shared/data next to the repository."""
    if isinstance(data, str) and "${data_root}" in data:
        return data.replace("${data_root}", str(DEFAULT_DATA_ROOT))
    if isinstance(data, dict):
        return {k: resolve_data_root(v) for k, v in data.items()}
    if isinstance(data, list):
        return [resolve_data_root(v) for v in data]
    return data


def _key(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def validate(model: type[T], data: dict[str, Any], source: str = "config") -> T:
    """`data` as `model`, or one ConfigError naming every invalid key of it."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        problems = [f"key '{_key(e.get('loc', ()))}': {e.get('msg')}" for e in err.errors()]
        if len(problems) == 1:
            raise ConfigError(f"{source}: {problems[0]}") from None
        raise ConfigError(f"{source}: {len(problems)} invalid keys:\n  " + "\n  ".join(problems)) from None


def load_config(model: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None) -> T:
    """`model` from `base` (defaults given by the caller), then the file, then `overrides`."""
    data: dict[str, Any] = dict(base or {})
    source = "config"
    if path is not None:
        source = str(path)
        data = deep_merge(data, read_config_file(path))
    apply_overrides(data, overrides or [])
    return validate(model, resolve_data_root(data), source)
