#!/usr/bin/env bash
# Run the optional verl adapter lane (tests/rl/test_verl_lane.py) in .venv-verl/ (or $VERL_VENV).
# Set it up first with scripts/setup_verl_lane.sh. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VERL_VENV:-.venv-verl}"
PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
  echo "no $VENV/: run scripts/setup_verl_lane.sh first" >&2
  exit 2
fi
if ! "$PY" -c "import verl" >/dev/null 2>&1; then
  echo "verl does not import in $VENV/ (re-run scripts/setup_verl_lane.sh):" >&2
  "$PY" -c "import verl" >&2 || true
  exit 2
fi
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TRANSFORMERS_OFFLINE="${TRANSFORMERS_OFFLINE:-1}"
export TOKENIZERS_PARALLELISM="${TOKENIZERS_PARALLELISM:-false}"
# verl's RLHFDataset reads parquet through Hugging Face `datasets`: a throwaway cache, not ~/.cache
if [ -z "${HF_DATASETS_CACHE:-}" ]; then
  HF_DATASETS_CACHE="$(mktemp -d -t verl-lane-datasets-XXXXXX)"
  export HF_DATASETS_CACHE
  trap 'rm -rf "$HF_DATASETS_CACHE"' EXIT
fi
# -W: the verl_lane marker until pyproject.toml registers it (docs/verl.md)
"$PY" -m pytest -W "ignore::pytest.PytestUnknownMarkWarning" tests/rl/test_verl_lane.py "$@"
