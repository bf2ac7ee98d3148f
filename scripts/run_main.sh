#!/usr/bin/env bash
# The main job on local Ray: set up .venv, then evaluate the retrieval baselines on the
# shared LoCoMo and RealMem samples and print them side by side.
# Extra arguments go to `mnemoray eval suite` (e.g. --data /path/to/data, --out DIR, key=value).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
exec mnemoray eval suite --config configs/eval/retrieval_local.yaml "$@"
