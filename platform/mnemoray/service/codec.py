"""Framework snapshots as JSON text: numpy arrays and scalars become tagged objects.

Snapshots are stored in the tenant's database and travel in exports, so they are never
pickled (an imported export must not be able to run code); decoding only rebuilds plain
JSON values and numpy arrays from raw bytes.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np

_TAG = "__ndarray__"


def _default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value)
        if data.dtype.kind not in "biuf":
            return data.tolist()
        return {_TAG: base64.b64encode(data.tobytes()).decode("ascii"), "dtype": data.dtype.str,
                "shape": list(data.shape)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    raise TypeError(f"cannot store a {type(value).__name__} in a memory snapshot")


def _object_hook(obj: dict[str, Any]) -> Any:
    if _TAG in obj and set(obj) == {_TAG, "dtype", "shape"}:
        dtype = np.dtype(obj["dtype"])
        if dtype.kind not in "biuf":
            raise ValueError(f"snapshot array of unsupported dtype {obj['dtype']!r}")
        raw = base64.b64decode(obj[_TAG], validate=True)
        return np.frombuffer(raw, dtype=dtype).reshape(obj["shape"]).copy()
    return obj


def dumps(state: Any) -> str:
    return json.dumps(state, default=_default, separators=(",", ":"))


def loads(text: str) -> Any:
    return json.loads(text, object_hook=_object_hook)
