"""Policy weights in a form Ray moves without copying: numpy arrays, shared tensors once.

Ray pickles torch tensors into bytes (each reader decodes its own copy), but reads numpy
arrays straight from the object store's shared memory. Packing a state dict as numpy made
a weight push several times faster on CPU (benchmarks/weight_sync.py). bfloat16 has no
numpy dtype, so 16-bit tensors travel as int16 bit patterns and are viewed back. Tensors
that share storage (tied embeddings and lm_head) travel once.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

_BITS16 = (torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class PackedWeights:
    arrays: list[np.ndarray]
    entries: dict[str, tuple[int, str]]  # name -> (index into arrays, torch dtype name)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays)


def pack_weights(state: Mapping[str, torch.Tensor]) -> PackedWeights:
    arrays: list[np.ndarray] = []
    seen: dict[tuple[int, tuple[int, ...], tuple[int, ...], torch.dtype], int] = {}
    entries: dict[str, tuple[int, str]] = {}
    for name, tensor in state.items():
        t = tensor.detach().cpu()
        key = (t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype)
        if key not in seen:
            t = t.contiguous()
            seen[key] = len(arrays)
            arrays.append((t.view(torch.int16) if t.dtype in _BITS16 else t).numpy())
        entries[name] = (seen[key], str(t.dtype).removeprefix("torch."))
    return PackedWeights(arrays, entries)


def unpack_weights(packed: PackedWeights | Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Tensors viewing the packed arrays (read-only when they live in Ray's object store:
    copy them into a model with `load_state_dict`, never write to them)."""
    if not isinstance(packed, PackedWeights):
        return dict(packed)
    out = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        for name, (index, dtype) in packed.entries.items():
            t = torch.from_numpy(packed.arrays[index])
            wanted = getattr(torch, dtype)
            out[name] = t.view(wanted) if wanted in _BITS16 else t
    return out


__all__ = ["PackedWeights", "pack_weights", "unpack_weights"]
