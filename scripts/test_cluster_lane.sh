#!/usr/bin/env bash
# The cluster lane (not part of the default run): a real two-node Ray cluster on this machine
# (`ray start --head` + `ray start --address`, token auth), jobs submitted with `ray job submit
# --working-dir .` (an evaluation, and the whole pipeline of configs/pipeline/local.yaml), `serve
# deploy` of the memory service, `ray job stop`; then Ray's autoscaler (v2, fake multi-node
# provider) adding a worker node for a job's demand and removing it when idle. Extra pytest
# arguments pass through (e.g. `-k "not pipeline"` skips the whole-loop job, most of the time).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false DS_ACCELERATOR=cpu
python -m pytest -q -m cluster_lane tests/cluster "$@"
