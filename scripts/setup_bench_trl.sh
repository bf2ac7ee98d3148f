#!/usr/bin/env bash
# Peer venv for benchmarks/grpo_step.py: creates .venv-bench-trl/ (separate from .venv/,
# which it never touches) with torch (CPU build), Hugging Face TRL and the transformers
# version of .venv, so benchmarks/peers/trl_grpo.py runs TRL's GRPOTrainer on the same
# model as mnemoray. TRL is only a benchmark peer, never a dependency of mnemoray: this
# venv does not install mnemoray, and mnemoray never imports trl.
# Idempotent: a second run with the same versions skips the install.
#   TORCH_SPEC         default torch==2.13.0 (the CPU build here; without the pin pip may
#                      pull a CUDA build, several GB)
#   TRL_SPEC           default trl==1.16.0
#   TRANSFORMERS_SPEC  default: transformers==<the version installed in .venv>
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV=.venv-bench-trl
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
TRL_SPEC="${TRL_SPEC:-trl==1.16.0}"
if [ -z "${TRANSFORMERS_SPEC:-}" ]; then
  if [ -x .venv/bin/python ]; then
    TRANSFORMERS_SPEC="transformers==$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("transformers"))')"
  else
    echo "[setup-bench-trl] .venv not found (run scripts/setup.sh first, or set TRANSFORMERS_SPEC)" >&2
    exit 1
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup-bench-trl] creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"

stamp="$VENV/.bench-trl-install"
want="$TORCH_SPEC $TRL_SPEC $TRANSFORMERS_SPEC"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$PY" -c "import trl, transformers, torch" 2>/dev/null; then
  echo "[setup-bench-trl] $VENV is up to date"
else
  echo "[setup-bench-trl] installing $want into $VENV (first time takes a few minutes)"
  "$PY" -m pip install -q --upgrade pip
  # torch first and pinned; then hold it with a constraint so trl/accelerate cannot swap it.
  "$PY" -m pip install -q "$TORCH_SPEC"
  constraints="$(mktemp)"
  trap 'rm -f "$constraints"' EXIT
  echo "torch==$("$PY" -c 'import torch; print(torch.__version__)')" > "$constraints"
  "$PY" -m pip install -q -c "$constraints" "$TRL_SPEC" "$TRANSFORMERS_SPEC"
  echo "$want" > "$stamp"
fi

echo "[setup-bench-trl] done: $("$PY" -c 'import torch, transformers, trl; print("trl", trl.__version__, "| transformers", transformers.__version__, "| torch", torch.__version__)')"
echo "[setup-bench-trl] run the benchmark with: python benchmarks/grpo_step.py [--quick]   (from .venv)"
