"""A tiny randomly-initialised causal LM with a real tokenizer, built on the fly.

Tests and offline runs need a generative model that every engine can load by path (HF,
vLLM, our Serve app) without downloading anything. Its text is meaningless, but forward
passes, batching, token counts, chat templates and constrained JSON decoding are real.
The tokenizer is a byte-level BPE trained here on a small corpus written below, so any
string (JSON included) can be encoded. Same seed -> identical files.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Literal

Arch = Literal["qwen2", "llama"]

BOS, EOS, PAD, IM_START = "<|endoftext|>", "<|im_end|>", "<|pad|>", "<|im_start|>"
SPECIAL_TOKENS = [BOS, EOS, PAD, IM_START]

# ChatML-like template, written by hand (no hub download to copy one from).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

VOCAB_SIZE = 1536
# Word/number/punctuation split used before byte-level BPE (GPT-4 style; digits one by one).
_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
HIDDEN = 128
LAYERS = 2
HEADS = 2
HEAD_DIM = 64  # vLLM's attention kernels need a head dim of at least 64
MAX_POSITIONS = 4096

_WORDS = """
the a an and or but if then so because of to in on at by for with from about into over
after before under between through during without within again never always often
i you he she it we they me him her us them my your his its our their this that these
those who what when where why how which there here is are was were be been being have
has had do does did can could will would shall should may might must not no yes all any
some many much more most few each every other another such only own same than too very
just also now still even back well way new old good great first last long little big
high small large next early young important public bad right left able sure free full
time year day week month night morning evening today yesterday tomorrow hour minute
people person man woman child friend family mother father sister brother wife husband
name memory memories fact facts session sessions query queries answer question insight
persona user assistant system agent character role story event events place city home
work job school book music movie game food coffee tea dinner lunch breakfast trip travel
dog cat garden car house room phone email message note plan goal project team meeting
like love want need know think remember forget say tell ask see look find give take make
go come get put keep let begin seem help talk turn start show hear play run move live
believe bring happen write sit stand lose pay meet include continue set learn change
lead understand watch follow stop create speak read spend grow open walk win offer
likes loves wants needs knows thinks remembers said told asked saw found gave took made
went came got kept began talked started played moved lived wrote read met learned
happy sad tired busy excited worried calm angry curious afraid proud kind funny quiet
red blue green black white yellow orange purple brown gray
monday tuesday wednesday thursday friday saturday sunday
january february march april may june july august september october november december
one two three four five six seven eight nine ten hundred thousand
true false null
id text type content score reason label value key items list object string number
summary evidence source target timestamp date turn speaker topic category importance
add update delete noop keep merge
"""

_JSON_SNIPPETS = [
    '{"id": "a1", "text": "hello", "score": 3}',
    '{"name":"Alice","age":31,"likes":["tea","books"],"city":"Paris"}',
    '{"facts": [{"text": "likes coffee", "session": 2}], "insight": null}',
    '{"op": "add", "memory": "owns a dog", "importance": 0.75, "ok": true}',
    '[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 42, 100, -7, 3.14, 0.5, 1e-3]',
    '{"answer": "yes", "evidence": ["s1:t3", "s2:t7"], "confidence": 0.9}',
    '{"label": "happy", "reason": "she said so", "ok": false, "score": 0}',
    '```json\n{"a": 1, "b": [true, false, null]}\n```',
    '{"nested": {"list": [{"k": "v"}, {"k": "w"}], "n": -12.5}}',
]

_CHAT_SNIPPETS = [
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n",
    "<|im_start|>user\nWhat do you remember about me?<|im_end|>\n",
    "<|im_start|>assistant\nYou told me you like hiking on Sunday.<|im_end|>\n",
    "<think>Let me recall the facts first.</think>",
]


def _corpus(seed: int = 1234) -> list[str]:
    """Deterministic training text: sentences from the word list, JSON, chat markers, digits."""
    rng = random.Random(seed)
    words = _WORDS.split()
    lines: list[str] = []
    for _ in range(3000):
        n = rng.randint(4, 14)
        sent = " ".join(rng.choice(words) for _ in range(n))
        lines.append(sent.capitalize() + rng.choice([".", "?", "!", ",", ":", ";"]))
    for _ in range(400):
        lines.append(rng.choice(_JSON_SNIPPETS))
        lines.append(rng.choice(_CHAT_SNIPPETS))
        lines.append(" ".join(str(rng.randint(0, 10 ** rng.randint(1, 6))) for _ in range(6)))
        lines.append("".join(rng.choice('{}[]:,"\'-+.0123456789 \n\t') for _ in range(24)))
    return lines


def build_tokenizer():
    """Train a byte-level BPE tokenizer and wrap it as a transformers fast tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # The same pipeline transformers 5 rebuilds for model_type qwen2, so the saved
    # tokenizer.json and the loaded Qwen2Tokenizer split text identically.
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_SPLIT_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[IM_START],
        padding_side="left",
        model_max_length=MAX_POSITIONS,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _model_config(arch: Arch, tokenizer):
    from transformers import LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        intermediate_size=HIDDEN * 2,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        head_dim=HEAD_DIM,
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        dtype="float32",
    )
    if arch == "qwen2":
        return Qwen2Config(**common)
    if arch == "llama":
        return LlamaConfig(**common)
    raise ValueError(f"unknown tiny arch '{arch}' (choose qwen2 or llama)")


def init_tiny(out: Path, arch: Arch = "qwen2", seed: int = 0) -> Path:
    """Write a tiny random model + tokenizer to `out` as an ordinary HF checkpoint."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    out = Path(out)
    tokenizer = build_tokenizer()
    config = _model_config(arch, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    _portable_tokenizer_config(out / "tokenizer_config.json")
    return out


def _portable_tokenizer_config(path: Path) -> None:
    """Name classes/keys that transformers 4.x (e.g. next to vLLM) also understands."""
    data = json.loads(path.read_text(encoding="utf-8"))
    data["tokenizer_class"] = "PreTrainedTokenizerFast"
    extra = data.pop("extra_special_tokens", None)
    if isinstance(extra, list):
        data["additional_special_tokens"] = extra
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def ensure_tiny(cache_dir: Path | str, arch: Arch = "qwen2", seed: int = 0) -> Path:
    """Build the tiny model once under `cache_dir` and reuse it (atomic: temp dir + rename)."""
    cache_dir = Path(cache_dir).expanduser()
    target = cache_dir / f"tiny-{arch}-seed{seed}"
    if (target / "config.json").exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=cache_dir))
    try:
        init_tiny(tmp, arch=arch, seed=seed)
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process finished first: its copy is identical, keep it.
            if not (target / "config.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
