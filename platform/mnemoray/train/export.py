"""Write a Hugging Face checkpoint (weights, config, tokenizer, chat template) from a DeepSpeed engine.

Under ZeRO-3 each rank holds a slice of every weight, so all ranks gather and rank 0
writes; under ZeRO 0-2 rank 0 already holds the full weights. Tokenizer files are
copied verbatim from the starting checkpoint so the export tokenizes (and templates
chats) exactly like the model was trained, in whichever transformers version loads it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

_TOKENIZER_FILES = ("tokenizer", "special_tokens_map", "added_tokens", "vocab", "merges", "chat_template",
                    "generation_config", "preprocessor_config")


def copy_tokenizer_files(src: Path, dst: Path) -> list[str]:
    copied = []
    for f in sorted(Path(src).iterdir()):
        if f.is_file() and f.name.startswith(_TOKENIZER_FILES):
            shutil.copy2(f, dst / f.name)
            copied.append(f.name)
    if not any(n.startswith("tokenizer") for n in copied):
        raise FileNotFoundError(f"{src}: no tokenizer files to export")
    return copied


GATHER_BYTES = 256 << 20  # ZeRO-3: how much of the model every rank gathers at once


def gather_groups(params: list[Any], limit: int) -> list[list[Any]]:
    """Parameters in order, cut into runs of at most `limit` bytes (whole; a larger one alone)."""
    groups: list[list[Any]] = []
    size = 0
    for p in params:
        nbytes = int(getattr(p, "ds_numel", p.numel())) * p.element_size()
        if not groups or (size + nbytes > limit and groups[-1]):
            groups.append([])
            size = 0
        groups[-1].append(p)
        size += nbytes
    return groups


def full_state_dict(engine: Any, zero_stage: int, rank: int, to_cpu: bool = True,
                    gather_bytes: int = GATHER_BYTES) -> dict[str, Any] | None:
    """The whole model's weights on rank 0 (None elsewhere), in `state_dict()` order;
    collective under ZeRO-3. `to_cpu=False`: on the device they are on (a GPU broadcast sends
    them from there): under ZeRO 0-2 the module's own tensors, under ZeRO-3 one copy of the
    gathered ones on rank 0.

    Under ZeRO-3 the ranks gather `gather_bytes` of parameters at a time, not the whole model
    at once: ZeRO-3 is there because a GPU cannot hold the whole model beside its training
    state, so a gather of all of it would not fit either. Tied tensors are copied once."""
    model = engine.module
    if zero_stage != 3:
        if rank != 0:
            return None
        return {k: v.detach().cpu() if to_cpu else v.detach() for k, v in model.state_dict().items()}
    import deepspeed

    names: dict[int, list[str]] = {}
    unique: dict[int, Any] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
        unique.setdefault(id(param), param)
    gathered: dict[str, Any] = {}
    for group in gather_groups(list(unique.values()), gather_bytes):
        with deepspeed.zero.GatheredParameters(group, modifier_rank=None):
            if rank == 0:  # copies: the gathered storage is freed when the context exits
                for param in group:
                    copy = param.detach().to("cpu", copy=True) if to_cpu else param.detach().clone()
                    gathered.update(dict.fromkeys(names[id(param)], copy))
    if rank != 0:
        return None
    buffers = dict(model.named_buffers())
    return {k: gathered[k] if k in gathered else (buffers[k].detach().cpu() if to_cpu else buffers[k].detach())
            for k in model.state_dict().keys()}


def export_hf(engine: Any, zero_stage: int, rank: int, source_model: str | Path, out_dir: Path) -> Path | None:
    """Collective: every rank must call it. Rank 0 writes `out_dir` and returns it."""
    state = full_state_dict(engine, zero_stage, rank)
    if rank != 0:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    engine.module.save_pretrained(out_dir, state_dict=state, safe_serialization=True)
    copy_tokenizer_files(Path(source_model), out_dir)
    return out_dir
