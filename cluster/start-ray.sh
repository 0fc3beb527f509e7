#!/usr/bin/env bash
# Start Ray on a node with the cluster's secrets in its environment; every node type runs this.
#
#   bash cluster/start-ray.sh --head --port=6379 ...        # instead of `ray start --head ...`
#   bash cluster/start-ray.sh --address=$RAY_HEAD_IP:6379   # instead of `ray start --address=...`
#
# Secrets never travel in a config, a runtime_env or a job's arguments (the dashboard shows those).
# They live in one env file, $SENTIDISTILL_ENV_FILE (default ~/sentidistill.env, mode 600), that the
# cluster launcher copies to every node (file_mounts in cluster/aws.yaml / gcp.yaml). Its variables
# are exported to `ray start`, so the raylet and every worker, actor, Serve replica and job driver
# it starts inherit them. Each name in $SENTIDISTILL_REQUIRED_ENV (default: HF_TOKEN
# SENTIDISTILL_API_KEY) must be set and non-empty, or the node refuses to start and says which one.
set -euo pipefail
ENV_FILE=${SENTIDISTILL_ENV_FILE:-$HOME/sentidistill.env}
if [ -f "$ENV_FILE" ]; then
  set -a
  # shellcheck disable=SC1090
  . "$ENV_FILE"
  set +a
fi
missing=()
for name in ${SENTIDISTILL_REQUIRED_ENV-HF_TOKEN SENTIDISTILL_API_KEY}; do
  [ -n "${!name:-}" ] || missing+=("$name")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "sentidistill: ${missing[*]} not set on this node ($(hostname)); put NAME=value lines in $ENV_FILE" \
       "(see docs/cluster.md, Secrets) or set SENTIDISTILL_REQUIRED_ENV to the names this cluster needs" >&2
  exit 78
fi
exec "${RAY:-ray}" start "$@"
