#!/usr/bin/env bash
# Create .venv/ at the repo root and install mnemoray with its test tools, pinned by
# constraints/cpu.txt (through scripts/install.sh, the same recipe the Docker images use).
# Idempotent: a second run with the same pyproject.toml, lock file and install script skips the install.
# On a CUDA machine, install the GPU stack instead: bash scripts/install.sh constraints/gpu.txt dev,gpu --editable
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
LOCK="${MNEMORAY_LOCK:-constraints/cpu.txt}"

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate

stamp=".venv/.mnemoray-install"
want="$(cat pyproject.toml "$LOCK" scripts/install.sh | sha256sum | cut -c1-16) $LOCK"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && python -c "import mnemoray" 2>/dev/null; then
  echo "[setup] .venv is up to date"
  exit 0
fi
echo "[setup] installing from $LOCK (first time takes a few minutes)"
PYTHON=python bash scripts/install.sh "$LOCK" dev --editable
echo "$want" > "$stamp"
echo "[setup] done: $(python -c 'import mnemoray, ray, torch; print("mnemoray", mnemoray.__version__, "| ray", ray.__version__, "| torch", torch.__version__)')"
