"""RL prompts as a verl RL parquet file (the `data.train_files` / `data.val_files` of a verl run).

One row per prompt, in verl's RL dataset layout:

    id            the mnemoray prompt id (read back by `load_prompts`; verl passes it through)
    data_source   the prompt's data_source (verl hands it to the reward)
    prompt        the chat messages: a list of {"role", "content"}
    ability       a free label (default "memory")
    reward_model  {"style": "rule", "ground_truth": ...}
    extra_info    the prompt's extra_info plus "index" (row number, unless the prompt has one)
                  and "mnemoray_id" (the id again: the reward only sees extra_info)

Ground truths: a string (or None) is stored as is. Anything else (numbers, lists, dicts)
is stored as its JSON text, and the row's extra_info gets "mnemoray_ground_truth_json":
True, because one parquet column holds one type and verl's reward receives the column
value unchanged. `mnemoray.rl.verl_reward:compute_score` decodes such rows before calling
the mnemoray reward; `load_prompts` returns the JSON text (decode with
`decode_ground_truth(prompt.ground_truth, prompt.extra_info)`). A ground truth JSON
cannot encode (a set, an arbitrary object) is a ValueError naming the prompt.

extra_info is one struct column for all rows: a key some rows lack reads back as None in
those rows (the verl adapter treats None as absent), the values under one key must share a
type across rows, and a key that is an empty mapping in every row cannot be stored (a
ValueError names the key in both cases).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mnemoray.rl.environments.prompts import RLPrompt
from mnemoray.rl.verl.reward import GROUND_TRUTH_JSON_FLAG

ID_KEY = "mnemoray_id"


def encode_ground_truth(prompt: RLPrompt) -> tuple[Any, bool]:
    """(stored value, is JSON text) for one prompt's ground truth."""
    truth = prompt.ground_truth
    if truth is None or isinstance(truth, str):
        return truth, False
    try:
        return json.dumps(truth, sort_keys=True, allow_nan=False), True
    except (TypeError, ValueError) as err:
        raise ValueError(f"prompt {prompt.id!r}: ground truth of type {type(truth).__name__} cannot be stored "
                         f"(not a string and not JSON-encodable: {err})") from err


def verl_row(prompt: RLPrompt, index: int, ability: str) -> dict[str, Any]:
    truth, as_json = encode_ground_truth(prompt)
    extra: dict[str, Any] = dict(prompt.extra_info)
    extra.setdefault("index", index)
    extra[ID_KEY] = prompt.id
    if as_json:
        extra[GROUND_TRUTH_JSON_FLAG] = True
    return {
        "id": prompt.id,
        "data_source": prompt.data_source,
        "prompt": [{"role": m["role"], "content": m["content"]} for m in prompt.messages],
        "ability": ability,
        "reward_model": {"style": "rule", "ground_truth": truth},
        "extra_info": extra,
    }


def empty_struct_key(rows: list[dict[str, Any]]) -> str | None:
    """An extra_info key that is an empty mapping (or missing) in every row: parquet cannot store it."""
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row["extra_info"]))
    for key in keys:
        values = [row["extra_info"].get(key) for row in rows]
        if all(v is None or (isinstance(v, Mapping) and not v) for v in values):
            if any(v is not None for v in values):
                return key
    return None


def conflicting_extra_key(rows: list[dict[str, Any]]) -> str | None:
    """The first extra_info key whose values pyarrow cannot put in one column, if any."""
    import pyarrow as pa

    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row["extra_info"]))
    for key in keys:
        try:
            pa.array([row["extra_info"].get(key) for row in rows])
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            return key
    return None


def export_verl_parquet(prompts: Iterable[RLPrompt], path: str | Path, ability: str = "memory") -> Path:
    """Write `prompts` as a verl RL parquet file at `path` (folders are created); returns the path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    items = list(prompts)
    if not items:
        raise ValueError("no prompts to export (verl needs at least one row)")
    seen: dict[str, int] = {}
    for i, prompt in enumerate(items):
        if prompt.id in seen:
            raise ValueError(f"duplicate prompt id {prompt.id!r} (rows {seen[prompt.id]} and {i})")
        seen[prompt.id] = i
        if not isinstance(prompt.extra_info, Mapping):
            raise ValueError(f"prompt {prompt.id!r}: extra_info must be a mapping")
    rows = [verl_row(prompt, i, ability) for i, prompt in enumerate(items)]
    if (key := empty_struct_key(rows)) is not None:
        raise ValueError(f"cannot write verl parquet: extra_info[{key!r}] is an empty mapping in every prompt "
                         "(parquet cannot store a struct without fields; drop the key or give it content)")
    try:
        table = pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as err:
        key = conflicting_extra_key(rows)
        where = f"extra_info[{key!r}] has values of different types across prompts" if key else "a column"
        raise ValueError(f"cannot write verl parquet: {where} ({err})") from err
    out = Path(path).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        pq.write_table(table, out)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        out.unlink(missing_ok=True)
        raise ValueError(f"cannot write verl parquet {out}: {err}") from err
    return out


__all__ = ["ID_KEY", "encode_ground_truth", "export_verl_parquet", "verl_row"]
