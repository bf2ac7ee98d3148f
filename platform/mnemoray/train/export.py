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


def full_state_dict(engine: Any, zero_stage: int, rank: int, to_cpu: bool = True) -> dict[str, Any] | None:
    """The whole model's weights on rank 0 (None elsewhere); collective under ZeRO-3.
    `to_cpu=False`: on the device they are on (a GPU broadcast sends them from there): under
    ZeRO 0-2 the module's own tensors, under ZeRO-3 one copy of the gathered ones on rank 0."""
    model = engine.module
    if zero_stage == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
            if rank != 0:
                return None
            # copies (the gathered storage is freed when the context exits), tied tensors copied once
            copies: dict[tuple[Any, ...], Any] = {}
            out = {}
            for name, v in model.state_dict().items():
                key = (v.data_ptr(), tuple(v.shape), v.stride(), v.dtype)
                if key not in copies:
                    copies[key] = v.detach().to("cpu", copy=True) if to_cpu else v.detach().clone()
                out[name] = copies[key]
            return out
    if rank != 0:
        return None
    return {k: v.detach().cpu() if to_cpu else v.detach() for k, v in model.state_dict().items()}


def export_hf(engine: Any, zero_stage: int, rank: int, source_model: str | Path, out_dir: Path) -> Path | None:
    """Collective: every rank must call it. Rank 0 writes `out_dir` and returns it."""
    state = full_state_dict(engine, zero_stage, rank)
    if rank != 0:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    engine.module.save_pretrained(out_dir, state_dict=state, safe_serialization=True)
    copy_tokenizer_files(Path(source_model), out_dir)
    return out_dir
