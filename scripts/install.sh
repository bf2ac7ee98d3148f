#!/usr/bin/env bash
# The one install recipe for mnemoray: scripts/setup.sh (the dev .venv), docker/Dockerfile.cpu
# and docker/Dockerfile.gpu all run this, so every environment gets the same pinned set.
#
#   bash scripts/install.sh LOCK [EXTRAS] [--editable]
#     LOCK     constraints/cpu.txt (CPU stack) or constraints/gpu.txt (the `gpu` extra: vLLM, faiss-gpu)
#     EXTRAS   comma-separated extras, e.g. dev or gpu ("" for none)
#
# Installs into the `python` on PATH (or $PYTHON): torch first at the lock's pin (so nothing
# later pulls another torch build), then mnemoray with the lock as pip constraints.
# Environment:
#   TORCH_INDEX_URL      extra index for the torch step only (e.g. PyTorch's CPU wheel index)
#   MNEMORAY_PIP_REPORT  resolve only: pip --dry-run --ignore-installed --report FILE (tests use it)
# Refresh the locks with scripts/lock.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
  echo "usage: scripts/install.sh LOCK [EXTRAS] [--editable]" >&2
  exit 2
fi
lock="$1"
extras="${2:-}"
editable="${3:-}"
PY="${PYTHON:-python}"
if [ ! -f "$lock" ]; then
  echo "[install] lock file $lock not found (expected constraints/cpu.txt or constraints/gpu.txt)" >&2
  exit 2
fi
torch_pin="$(grep -E '^torch==' "$lock" || true)"
if [ -z "$torch_pin" ]; then
  echo "[install] $lock has no torch== pin; regenerate it with scripts/lock.sh" >&2
  exit 2
fi

target="."
if [ -n "$extras" ]; then target=".[$extras]"; fi
mode=()
if [ "$editable" = "--editable" ]; then mode=(-e); fi
report=()
if [ -n "${MNEMORAY_PIP_REPORT:-}" ]; then report=(--dry-run --ignore-installed --report "$MNEMORAY_PIP_REPORT"); fi
torch_index=()
if [ -n "${TORCH_INDEX_URL:-}" ]; then torch_index=(--extra-index-url "$TORCH_INDEX_URL"); fi

if [ ${#report[@]} -eq 0 ]; then
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q -c "$lock" "${torch_index[@]}" "$torch_pin"
fi
"$PY" -m pip install -q -c "$lock" "${report[@]}" "${mode[@]}" "$target"
