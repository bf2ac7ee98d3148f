#!/usr/bin/env bash
# The main job on local Ray: set up .venv, then run the whole loop (synthesize -> build memory
# with a teacher -> SFT -> GRPO -> export -> serve -> evaluate through the service -> the
# retrieval baselines on the shared LoCoMo / RealMem samples) into runs/pipeline/local/report.md.
# A rerun skips finished stages. Extra arguments go to `mnemoray pipeline run`
# (e.g. --out DIR, --from STAGE, key=value).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false DS_ACCELERATOR=cpu
exec mnemoray pipeline run --config configs/pipeline/local.yaml "$@"
