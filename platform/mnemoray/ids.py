"""Deterministic ids: the same content always gets the same id, so reruns are idempotent."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def stable_id(*parts: Any, length: int = 16) -> str:
    """Hash any JSON-serialisable parts into a short hex id."""
    payload = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:length]
