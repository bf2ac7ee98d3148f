"""A small learnable SFT task (copy a short string) for smoke runs, tests and benchmarks.

A random tiny model cannot learn anything meaningful in a few steps, but copying the
prompt's payload is learnable fast, so a falling eval loss shows training really works.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

_WORDS = ["red", "blue", "green", "tea", "cat", "dog", "book", "city", "home", "plan", "note", "game"]


def copy_task(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        payload = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(2, 4)))
        out.append({"messages": [
            {"role": "user", "content": f"copy: {payload}"},
            {"role": "assistant", "content": payload},
        ]})
    return out


def write_copy_task(path: Path, n: int = 256, seed: int = 0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in copy_task(n, seed)), encoding="utf-8")
    return path
