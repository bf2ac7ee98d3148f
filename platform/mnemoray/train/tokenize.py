"""Chat samples -> token ids + labels that train on assistant tokens only; packing and padding.

The prompt is rendered with the model's own chat template, so training sees exactly what
inference will send. Each message is encoded as the text the template adds for it; the
assistant parts (content and end-of-turn marker) get labels, everything else -100.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mnemoray.train.formats import BadSample

IGNORE = -100


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated_tokens: int = 0  # tokens cut to fit max_length


def _render(tokenizer: Any, messages: list[dict[str, str]], gen_prompt: bool = False) -> str:
    if not messages:
        return ""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen_prompt)


def _segments(tokenizer: Any, messages: list[dict[str, str]], train_last_only: bool) -> list[tuple[str, bool]]:
    """(text, trained) pieces whose concatenation is the rendered conversation."""
    last_assistant = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    pieces: list[tuple[str, bool]] = []
    done = ""
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            prompt = _render(tokenizer, messages[:i], gen_prompt=True)
            if not prompt.startswith(done):
                raise BadSample("chat template is not prefix-stable")
            pieces.append((prompt[len(done):], False))
            done = prompt
        full = _render(tokenizer, messages[: i + 1])
        if not full.startswith(done):
            raise BadSample("chat template is not prefix-stable")
        trained = m["role"] == "assistant" and (not train_last_only or i == last_assistant)
        pieces.append((full[len(done):], trained))
        done = full
    return [(t, k) for t, k in pieces if t]


def encode_chat(tokenizer: Any, messages: list[dict[str, str]], max_length: int,
                overlong: str = "truncate", train_on: str = "all_assistant") -> Encoded:
    """Token ids and labels for one conversation; raises BadSample when nothing is left to learn."""
    ids: list[int] = []
    labels: list[int] = []
    for text, trained in _segments(tokenizer, messages, train_on == "last_assistant"):
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids.extend(piece)
        labels.extend(piece if trained else [IGNORE] * len(piece))
    cut = max(0, len(ids) - max_length)
    if cut:
        if overlong == "drop":
            raise BadSample("longer than max_length")
        ids, labels = ids[:max_length], labels[:max_length]
    # a label predicts from the previous token, so the first position never counts
    if not any(lab != IGNORE for lab in labels[1:]):
        raise BadSample("no assistant tokens within max_length" if cut else "no assistant tokens")
    return Encoded(ids, labels, cut)


def pack(rows: list[Encoded], max_length: int) -> list[dict[str, list[int]]]:
    """First-fit packing into rows of at most max_length tokens; position ids restart per sample.

    Transformers reads restarting position ids (with no attention mask and no KV cache)
    as separate sequences, so packed samples do not attend to each other.
    """
    bins: list[dict[str, list[int]]] = []
    for row in sorted(rows, key=lambda r: len(r.input_ids), reverse=True):
        n = len(row.input_ids)
        target = next((b for b in bins if len(b["input_ids"]) + n <= max_length), None)
        if target is None:
            target = {"input_ids": [], "labels": [], "position_ids": []}
            bins.append(target)
        target["input_ids"].extend(row.input_ids)
        target["labels"].extend(row.labels)
        target["position_ids"].extend(range(n))
    return bins


def collate(batch: dict[str, Any], pad_id: int) -> dict[str, Any]:
    """Right-pad a batch of ragged rows into tensors (torch imported lazily: data prep runs without it)."""
    import torch

    ids = [np.asarray(x, dtype=np.int64) for x in batch["input_ids"]]
    labs = [np.asarray(x, dtype=np.int64) for x in batch["labels"]]
    width = max(len(x) for x in ids)
    n = len(ids)
    input_ids = np.full((n, width), pad_id, dtype=np.int64)
    labels = np.full((n, width), IGNORE, dtype=np.int64)
    mask = np.zeros((n, width), dtype=np.int64)
    for i, (x, y) in enumerate(zip(ids, labs)):
        input_ids[i, : len(x)] = x
        labels[i, : len(y)] = y
        mask[i, : len(x)] = 1
    out = {"input_ids": torch.from_numpy(input_ids), "labels": torch.from_numpy(labels)}
    if "position_ids" in batch:
        pos = np.zeros((n, width), dtype=np.int64)
        for i, p in enumerate(batch["position_ids"]):
            p = np.asarray(p, dtype=np.int64)
            pos[i, : len(p)] = p
            # padding continues as its own "sequence" so it never joins the last sample
            pos[i, len(p):] = np.arange(width - len(p))
        out["position_ids"] = torch.from_numpy(pos)
    else:
        out["attention_mask"] = torch.from_numpy(mask)
    out["num_tokens"] = int(mask.sum())
    return out


def epoch_seed(seed: int, epoch: int) -> int:
    """One integer seed per (shuffle seed, epoch), for shuffles that take a single int."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The order a worker visits its n rows in one epoch: as stored in epoch 0 (the data
    set was shuffled once with `seed`), then a fresh permutation per epoch drawn from
    (seed, epoch). Fixed by its arguments, so a resume mid-epoch skips exactly the
    batches the crashed run had taken."""
    if epoch == 0:
        return list(range(n))
    return np.random.default_rng(epoch_seed(seed, epoch)).permutation(n).tolist()


def held_batches(rows: list[dict[str, Any]], micro: int, pad_id: int, order: list[int] | None = None) -> Any:
    """Collated micro-batches over rows held in memory, in `order` (default: as held); a
    last partial batch is dropped (its rows come up in another epoch's order)."""
    order = list(range(len(rows))) if order is None else order
    for start in range(0, len(order) - micro + 1, micro):
        chunk = [rows[i] for i in order[start:start + micro]]
        yield collate({key: [r[key] for r in chunk] for key in chunk[0]}, pad_id)
