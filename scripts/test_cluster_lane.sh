#!/usr/bin/env bash
# The cluster lane (not part of the default run): a real two-node Ray cluster on this machine
# (`ray start --head` + `ray start --address`, token auth), jobs submitted with `ray job submit
# --working-dir .`, `serve deploy` of the memory service, `ray job stop`; then Ray's fake
# multi-node autoscaler adding and removing worker nodes. Extra pytest arguments pass through.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false DS_ACCELERATOR=cpu
python -m pytest -q -m cluster_lane tests/cluster "$@"
