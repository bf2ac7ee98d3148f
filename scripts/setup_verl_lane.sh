#!/usr/bin/env bash
# Optional verl adapter lane: creates .venv-verl/ (separate from .venv/, which it never
# touches) with mnemoray, its test tools, torch==2.13.0 (CPU build) and verl, then prints
# how to run the lane (scripts/test_verl_lane.sh).
# Idempotent: a second run with the same pyproject.toml and versions skips the install.
#   VERL_VENV   default .venv-verl (the lane's virtual environment; test_verl_lane.sh reads it too)
#   VERL_SPEC   default verl==0.9.1 (the version the adapter and its tests were checked against)
#   TORCH_SPEC  default torch==2.13.0 (verl's base install does not pin torch; the pin keeps
#               pip from pulling a CUDA build, several GB, onto a CPU machine)
#   VERL_EXTRAS default cachetools: imported by verl.trainer.ppo.ray_trainer (GRPO's
#               compute_advantage, the legacy trainer) but listed only in verl's "verl-core" extra
#   VERL_NO_DEPS=1  install verl with --no-deps plus only what importing DataProto, the reward
#               managers and the trainer module needs (VERL_MIN_DEPS); for when verl's pins clash
#               with ours (they do not with verl 0.9.1: its transformers<5.11 pin is inside ours)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VERL_VENV:-.venv-verl}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
VERL_SPEC="${VERL_SPEC:-verl==0.9.1}"
VERL_NO_DEPS="${VERL_NO_DEPS:-0}"
VERL_EXTRAS="${VERL_EXTRAS:-cachetools}"
VERL_MIN_DEPS="${VERL_MIN_DEPS:-tensordict>=0.8.0,!=0.9.0,<=0.10.0 hydra-core codetiming datasets dill pylatexenc torchdata peft}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup-verl] creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"

stamp="$VENV/.mnemoray-install"
want="$(sha256sum pyproject.toml | cut -c1-16) $TORCH_SPEC $VERL_SPEC no-deps=$VERL_NO_DEPS extras=$VERL_EXTRAS"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$PY" -c "import mnemoray, verl" 2>/dev/null; then
  echo "[setup-verl] $VENV is up to date"
else
  echo "[setup-verl] installing into $VENV (first time takes several minutes)"
  "$PY" -m pip install -q --upgrade pip
  # torch first and pinned; then hold it with a constraint so verl's requirements cannot swap it.
  "$PY" -m pip install -q "$TORCH_SPEC"
  constraints="$(mktemp)"
  trap 'rm -f "$constraints"' EXIT
  echo "torch==$("$PY" -c 'import importlib.metadata as m; print(m.version("torch"))')" > "$constraints"
  if [ "$VERL_NO_DEPS" = "1" ]; then
    "$PY" -m pip install -q -c "$constraints" -e ".[dev]"
    "$PY" -m pip install -q -c "$constraints" --no-deps "$VERL_SPEC"
    # shellcheck disable=SC2086  # the list is meant to split into several requirements
    "$PY" -m pip install -q -c "$constraints" $VERL_MIN_DEPS
  else
    "$PY" -m pip install -q -c "$constraints" -e ".[dev]" "$VERL_SPEC"
  fi
  if [ -n "$VERL_EXTRAS" ]; then
    # shellcheck disable=SC2086
    "$PY" -m pip install -q -c "$constraints" $VERL_EXTRAS
  fi
  echo "$want" > "$stamp"
fi

echo "[setup-verl] done: $("$PY" -c 'import mnemoray, torch, transformers, verl; print("mnemoray", mnemoray.__version__, "| verl", verl.__version__, "| torch", torch.__version__, "| transformers", transformers.__version__)' 2>/dev/null || echo 'verl import failed; run scripts/test_verl_lane.sh to see why')"
echo "[setup-verl] run the lane with: scripts/test_verl_lane.sh   (extra pytest args pass through)"
