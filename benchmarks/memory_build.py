"""Cost of building memory with an LLM, per framework, against the instant endpoint.

The zero-fault fault endpoint answers every call at once with a valid instance of the
call's JSON schema, so the figures isolate the platform: memory-model calls per history
and per session, tokens in/out per session (counted with a real BPE tokenizer — the tiny
model's), build throughput (sessions/s) and memory-bank size per 1k turns. Frameworks are
compared side by side in one run; nothing is asserted. The instant answers are minimal
schema instances, so item counts and output tokens are lower bounds of a real model's.

    python benchmarks/memory_build.py [--sessions 6] [--histories 2] [--frameworks dualmem,membuilder,...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mnemoray.config import DEFAULT_DATA_ROOT, MemoryConfig
from mnemoray.index.embedder import Embedder
from mnemoray.llm.fault_server import FaultConfig, FaultServer
from mnemoray.llm.openai_engine import OpenAIEngine
from mnemoray.llm.tiny import ensure_tiny
from mnemoray.loaders import load_dataset
from mnemoray.memory.bank import write_bank
from mnemoray.memory.build import build_history
from mnemoray.memory.registry import llm_frameworks


def count_tokens(tokenizer, entries: list[dict]) -> tuple[int, int]:
    tokens_in = sum(len(tokenizer(tokenizer.apply_chat_template(e["messages"], tokenize=False))["input_ids"])
                    for e in entries)
    tokens_out = sum(len(tokenizer(e["raw_output"] or "")["input_ids"]) for e in entries)
    return tokens_in, tokens_out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA_ROOT / "locomo")
    ap.add_argument("--histories", type=int, default=2)
    ap.add_argument("--sessions", type=int, default=6, help="sessions read per history")
    ap.add_argument("--frameworks", default=",".join(llm_frameworks()), help="default: every LLM-built framework")
    args = ap.parse_args()

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ensure_tiny(Path.home() / ".cache/mnemoray/tiny", "qwen2", 0))
    samples, _ = load_dataset("locomo", args.data, limit=args.histories)
    embedder = Embedder()
    table = Table(
        title=f"Memory build against the instant endpoint ({len(samples)} LoCoMo histories × {args.sessions} sessions)"
    )
    for head in ("framework", "calls/history", "calls/session", "tokens in/session", "tokens out/session",
                 "sessions/s", "failures", "items/1k turns", "bank KB/1k turns"):
        table.add_column(head, no_wrap=True)
    with FaultServer(FaultConfig()) as url, tempfile.TemporaryDirectory() as tmp:
        engine = OpenAIEngine(model="fault-model", base_url=url, max_in_flight=64, max_retries=2)
        for name in args.frameworks.split(","):
            cfg = MemoryConfig(name=name)
            calls = failures = items = turns = sessions = tok_in = tok_out = 0
            bank_bytes = 0
            start = time.perf_counter()
            for s in samples:
                out = build_history(s.history, cfg, engine, embedder, max_sessions=args.sessions)
                st = out["stats"]
                calls += st.get("calls", 0)
                failures += st.get("failures", 0)
                items += len(out["rows"])
                turns += st["turns"]
                sessions += st["sessions"]
                path = Path(tmp) / f"{name}-{s.history.id}.parquet"
                write_bank(out["rows"], path)
                bank_bytes += path.stat().st_size
                ti, to = count_tokens(tokenizer, out["trajectories"])
                tok_in += ti
                tok_out += to
            wall = time.perf_counter() - start
            table.add_row(name, f"{calls / len(samples):.1f}", f"{calls / sessions:.1f}", f"{tok_in / sessions:.0f}",
                          f"{tok_out / sessions:.0f}", f"{sessions / wall:.2f}", str(failures),
                          f"{items * 1000 / turns:.0f}", f"{bank_bytes / 1024 * 1000 / turns:.1f}")
        engine.close()
    Console(width=180).print(table)


if __name__ == "__main__":
    main()
