#!/usr/bin/env bash
# Install (idempotent) and run the test suite: unit, integration (real Ray, tiny model) and the
# bounded slow set (real SmolLM2, the whole pipeline on a small slice). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export RAY_AUTH_MODE=disabled HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest "$@"
