#!/usr/bin/env bash
# Dress rehearsal of the GPU-cluster path on this machine, with the steps docs/cluster.md gives users.
#
#   bash scripts/rehearse-cluster.sh            # from the repo root, after scripts/install.sh; about 8 min on 2 idle CPU cores
#
# It builds the topology of cluster/aws.yaml out of local processes and runs the real user path on it:
#   - an S3-compatible server (moto) on 127.0.0.1; run_dir, data_dir, models and corpus are s3:// URIs
#     reached through AWS_ENDPOINT_URL and AWS_* credentials, as a user's shell and nodes would have;
#   - a Ray head advertising no GPUs, an "H100" worker node and an "A100" worker node (`ray start`
#     with --num-gpus and the accelerator_type:H100 / A100 resources of cluster/aws.yaml), each started
#     by cluster/start-ray.sh with the secrets from an env file (the documented mechanism);
#   - `sentidistill data fetch sentibench --from ... --to s3://...`, `sentidistill submit
#     jobs/configs/gpu-cluster.yaml --stage run ... --follow` with only models, sizes and locations
#     overridden, `sentidistill status s3://...`, `--stage serve`, calls to the endpoint with the API
#     key (curl /v1/sentiment and the OpenAI client), `sentidistill eval --endpoint`;
#   - checks from storage and Ray's state API (scripts/rehearse_cluster.py check), then a teardown that
#     kills exactly the processes this script started (found by a marker in their environment).
# Without CUDA every engine and Train worker falls back to its CPU path on the "GPU" nodes; the
# summary says so. Env: REHEARSAL_KEEP=1 keeps the work dir; SENTIBENCH_DIR (default ../shared/data/sentibench).
set -euo pipefail
cd "$(dirname "$0")/.."
main() {  # one function: bash reads all of it before running, so editing the file mid-run is safe
REPO=$(pwd)
VENV_BIN=${VENV_BIN:-$REPO/.venv/bin}
PY=$VENV_BIN/python
export PATH="$VENV_BIN:$PATH"
SENTIBENCH_DIR=${SENTIBENCH_DIR:-$REPO/../shared/data/sentibench}
[ -d "$SENTIBENCH_DIR" ] || { echo "rehearsal: no SentiBench copy at $SENTIBENCH_DIR (set SENTIBENCH_DIR)" >&2; exit 2; }

WORK=$(mktemp -d /tmp/sdr.XXXXXX)   # short: Ray's unix sockets live below it (107-byte limit)
MARK="sentidistill-rehearsal-$(basename "$WORK")"
LOGS=$WORK/logs; mkdir -p "$LOGS"
T0=$(date +%s)
say() { printf '\n== [%4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
freeport() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# The S3 server and `ray start` get SENTIDISTILL_REHEARSAL=$MARK in their environment; raylets pass it to
# every worker, actor and job driver they start, so teardown kills exactly those processes (never `ray stop`,
# which would also stop other Ray clusters on this machine).
ours() { grep -l "SENTIDISTILL_REHEARSAL=$MARK" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3 || true; }
teardown() {
  local rc=$?
  say "teardown"
  local pids
  pids=$(ours)
  [ -n "$pids" ] && kill -TERM $pids 2>/dev/null || true
  for _ in $(seq 1 20); do
    pids=$(ours)
    [ -z "$pids" ] && break
    sleep 0.5
  done
  [ -n "$pids" ] && kill -KILL $pids 2>/dev/null || true
  sleep 0.5
  left=$(ours)
  if [ -n "$left" ]; then echo "rehearsal: processes left behind: $left" >&2; rc=1; else echo "no process left behind"; fi
  if [ "${REHEARSAL_KEEP:-0}" = 1 ]; then echo "work dir kept: $WORK"; else rm -rf "$WORK"; fi
  exit $rc
}
trap teardown EXIT
trap 'exit 130' INT TERM

# -- storage: an S3-compatible server, reached the way a user reaches S3 --------------------------------
S3_PORT=$(freeport)
SENTIDISTILL_REHEARSAL=$MARK "$VENV_BIN/moto_server" -H 127.0.0.1 -p "$S3_PORT" >"$LOGS/s3.log" 2>&1 &
export AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT AWS_ACCESS_KEY_ID=rehearsal AWS_SECRET_ACCESS_KEY=rehearsal-secret \
       AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
export RAY_AUTH_MODE=disabled HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false RAY_USAGE_STATS_ENABLED=0
for _ in $(seq 1 60); do curl -s -o /dev/null "$AWS_ENDPOINT_URL" && break; sleep 0.5; done
BUCKET=rehearsal
S3=s3://$BUCKET
say "S3 server on $AWS_ENDPOINT_URL; bucket, tiny models and corpus"
"$PY" scripts/rehearse_cluster.py prepare --bucket "$BUCKET" --work "$WORK"
say "sentidistill data fetch sentibench --from $SENTIBENCH_DIR --to $S3/data"
sentidistill data fetch sentibench --from "$SENTIBENCH_DIR" --to "$S3/data" | tee "$LOGS/data-fetch.log"

# -- secrets: the env file every node's start script reads (docs/cluster.md, Secrets) -------------------
export SENTIDISTILL_ENV_FILE=$WORK/sentidistill.env
( umask 077; printf 'HF_TOKEN=hf_rehearsal%s\nSENTIDISTILL_API_KEY=sk-rehearsal%s\n' \
    "$("$PY" -c 'import secrets; print(secrets.token_hex(12))')" \
    "$("$PY" -c 'import secrets; print(secrets.token_hex(12))')" >"$SENTIDISTILL_ENV_FILE" )

# -- nodes: head without GPUs, one H100-type and one A100-type worker (cluster/aws.yaml) ----------------
GCS_PORT=$(freeport); DASH_PORT=$(freeport); SERVE_PORT=$(freeport)
ADDRESS=http://127.0.0.1:$DASH_PORT
# Each node has its own --temp-dir, as separate machines would: in a shared one, a worker node's runtime-env
# agent deletes the job's working dir (still the driver's cwd on the head) once its own workers are done.
# RAY_ADDRESS names this cluster to processes that look for "the" local Ray (Ray Train's placement-group
# cleaner does): on a real node there is one, on this machine other Ray instances may run too.
start_node() {  # name, then ray start arguments; a port another process took meanwhile: retry on fresh ports
  local name=$1; shift
  local attempt base
  for attempt in 1 2 3; do
    base=$(( 30000 + RANDOM % 300 * 100 ))
    if RAY_ADDRESS=127.0.0.1:$GCS_PORT SENTIDISTILL_REHEARSAL=$MARK SENTIDISTILL_CACHE=$WORK/cache-$name RAY=$VENV_BIN/ray bash cluster/start-ray.sh \
      --node-ip-address 127.0.0.1 --temp-dir "$WORK/r-$name" --disable-usage-stats \
      --node-manager-port "$(freeport)" --object-manager-port "$(freeport)" --metrics-export-port "$(freeport)" \
      --dashboard-agent-listen-port "$(freeport)" --dashboard-agent-grpc-port "$(freeport)" \
      --runtime-env-agent-port "$(freeport)" --min-worker-port $base --max-worker-port $(( base + 99 )) \
      --object-store-memory 400000000 "$@" >"$LOGS/node-$name.log" 2>&1; then
      return 0
    fi
    echo "rehearsal: node $name did not start (attempt $attempt); its log ends:" >&2
    tail -n 25 "$LOGS/node-$name.log" >&2
  done
  return 1
}
say "ray head (no GPUs) on 127.0.0.1:$GCS_PORT, dashboard $ADDRESS"
start_node head --head --port "$GCS_PORT" --dashboard-host 127.0.0.1 --dashboard-port "$DASH_PORT" \
  --ray-client-server-port "$(freeport)" --num-cpus 2 --num-gpus 0
say "worker nodes: teacher_h100 (2 GPUs, accelerator_type:H100), train_a100 (2 GPUs, accelerator_type:A100)"
start_node h100 --address "127.0.0.1:$GCS_PORT" --num-cpus 3 --num-gpus 2 --resources '{"accelerator_type:H100": 1}'
start_node a100 --address "127.0.0.1:$GCS_PORT" --num-cpus 2 --num-gpus 2 --resources '{"accelerator_type:A100": 1}'
"$PY" scripts/rehearse_cluster.py wait --address "$ADDRESS" --nodes 3

# -- the job: the user's config, with only models, sizes and locations overridden ------------------------
C=jobs/configs/gpu-cluster.yaml
RUN=$S3/runs/rehearsal
WHERE=(run_dir=$RUN data_dir=$S3/data
  "corpus.sources.0.path=$S3/corpora/yelp-reviews/*.jsonl" "corpus.sources.1.path=$S3/corpora/amazon-electronics/*.parquet")
MODELS=(teacher.model=$S3/models/tiny-teacher teacher.name=tiny-teacher train.model.student=$S3/models/tiny-student)
SIZES=(teacher.vllm.tensor_parallel_size=1 teacher.resources.num_gpus=1 teacher.resources.concurrency=1 teacher.resources.num_cpus=1
  teacher.resources.batch_size=16 teacher.vllm.max_num_seqs=16 teacher.max_model_len=2048
  corpus.sources.0.limit=3 corpus.sources.1.limit=3 generate.per_text=1 generate.max_new_tokens=16
  icl.examples_per_task=1 icl.max_new_tokens=16
  train.optimizer.epochs=1 train.optimizer.micro_batch_size=1 train.optimizer.effective_batch_size=2 train.resources.num_workers=2
  "train.resources.resources_per_worker={CPU: 1, GPU: 1}" train.data.max_seq_len=512 train.checkpoint.every_steps=1000
  eval.engine.resources.num_gpus=1 eval.engine.resources.concurrency=1 eval.engine.resources.batch_size=16 eval.limit=1 "eval.seeds=[42]"
  eval.max_new_tokens=16 serve.engine.resources.num_gpus=1 serve.autoscaling.max_replicas=1 serve.max_batch_size=4)
# A random tiny teacher writes noise: quality control would rightly drop every answer, leaving nothing to train on.
LAX_QC=(generate.quality.drop_truncated=false generate.quality.run_checks=false generate.quality.max_repetition=1.0
  icl.target=teacher icl.quality.drop_truncated=false icl.quality.run_checks=false
  icl.quality.max_repetition=1.0)
SERVE_AT=(serve.host=127.0.0.1 serve.port=$SERVE_PORT)
say "sentidistill submit $C --stage run --address $ADDRESS --follow"
sentidistill submit "$C" --stage run --address "$ADDRESS" --follow "${WHERE[@]}" "${MODELS[@]}" "${SIZES[@]}" \
  "${LAX_QC[@]}" 2>&1 | tee "$LOGS/submit-run.log"

say "sentidistill status $RUN"
sentidistill status "$RUN" 2>&1 | tee "$LOGS/status.log"

say "sentidistill submit $C --stage serve (detached app on the cluster)"
sentidistill submit "$C" --stage serve --address "$ADDRESS" --follow "${WHERE[@]}" "${MODELS[@]}" "${SIZES[@]}" \
  "${LAX_QC[@]}" "${SERVE_AT[@]}" -- --detach 2>&1 | tee "$LOGS/submit-serve.log"
ENDPOINT=http://127.0.0.1:$SERVE_PORT
set -a; . "$SENTIDISTILL_ENV_FILE"; set +a   # the user's own shell holds the key to call the API
say "POST $ENDPOINT/v1/sentiment with the API key"
code=$(curl -s -o "$WORK/sentiment.json" -w '%{http_code}' "$ENDPOINT/v1/sentiment" \
  -H "Authorization: Bearer $SENTIDISTILL_API_KEY" -H 'content-type: application/json' \
  -d '{"texts": ["What a lovely film."], "task": "sentiment"}')
cat "$WORK/sentiment.json"; echo
[ "$code" = 200 ] || { echo "rehearsal: /v1/sentiment answered HTTP $code" >&2; exit 1; }
unauth=$(curl -s -o /dev/null -w '%{http_code}' "$ENDPOINT/v1/sentiment" -H 'content-type: application/json' \
  -d '{"texts": ["What a lovely film."], "task": "sentiment"}')
[ "$unauth" = 401 ] || { echo "rehearsal: /v1/sentiment without the key answered HTTP $unauth, not 401" >&2; exit 1; }
say "OpenAI client: completions.create on $ENDPOINT/v1"
"$PY" - "$ENDPOINT/v1" <<'EOF' 2>&1 | tee "$LOGS/openai.log"
import os, sys
from openai import OpenAI
client = OpenAI(base_url=sys.argv[1], api_key=os.environ["SENTIDISTILL_API_KEY"])
name = client.models.list().data[0].id
out = client.completions.create(model=name, prompt="The movie was", max_tokens=4, temperature=0)
print(f"model {name}: {out.choices[0].text!r}")
EOF

SERVED=$(curl -s "$ENDPOINT/v1/models" -H "Authorization: Bearer $SENTIDISTILL_API_KEY" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["id"])')
say "sentidistill submit $C --stage eval -- --endpoint $ENDPOINT/v1 --model served=$SERVED (the served student)"
sentidistill submit "$C" --stage eval --address "$ADDRESS" --follow "${WHERE[@]}" \
  eval.engine.resources.batch_size=16 eval.engine.resources.num_gpus=0 eval.engine.resources.accelerator_type=null -- \
  --endpoint "$ENDPOINT/v1" "--model=served=$SERVED" --limit 1 --seeds 42 2>&1 | tee "$LOGS/eval-endpoint.log"

say "checks: manifests, metrics, exported student, placement (Ray state API), secrets in logs and artifacts"
"$PY" scripts/rehearse_cluster.py check --run-dir "$RUN" --address "$ADDRESS" --logs "$LOGS" "$WORK"/r-* \
  --secret-env HF_TOKEN SENTIDISTILL_API_KEY
cuda=$("$PY" -c 'import torch; print("yes" if torch.cuda.is_available() else "no")')
say "rehearsal passed in $(( $(date +%s) - T0 )) s"
if [ "$cuda" = no ]; then
  echo "CUDA absent: the vLLM engines and Train workers ran their CPU paths on the GPU-advertising nodes"
fi
}
main "$@"
