#!/usr/bin/env bash
# Create .venv/ at the repo root and install mnemoray with its test tools.
# Idempotent: a second run with the same pyproject.toml skips the install.
# TORCH_SPEC picks the torch build (default: the CPU build torch==2.13.0; on a CUDA
# machine use e.g. TORCH_SPEC="torch==2.13.0" with your CUDA index, or leave torch alone).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate

stamp=".venv/.mnemoray-install"
want="$(sha256sum pyproject.toml | cut -c1-16) $TORCH_SPEC"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && python -c "import mnemoray" 2>/dev/null; then
  echo "[setup] .venv is up to date"
  exit 0
fi
echo "[setup] installing (first time takes a few minutes)"
python -m pip install -q --upgrade pip
# torch first and pinned, so nothing later pulls a CUDA build onto a CPU machine
python -m pip install -q "$TORCH_SPEC"
python -m pip install -q -e ".[dev]"
echo "$want" > "$stamp"
echo "[setup] done: $(python -c 'import mnemoray, ray, torch; print("mnemoray", mnemoray.__version__, "| ray", ray.__version__, "| torch", torch.__version__)')"
