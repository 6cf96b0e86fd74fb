# A whole Setu federation on one machine, over loopback: a coordinator, a study lead and site agents, each a real
# process, driven only through the `setu` command. Sourced by the PyTorch examples' run.sh scripts.
#
# Needs: SETU_ROOT (the checkout, built with `npm run build`), WORK (a scratch directory), PY (a Python with torch).

setu() { node "$SETU_ROOT/dist/cli/main.js" "$@"; }
# The long-running ones are started as node itself, not through the function: `setu … &` would background a subshell
# whose PID is the one recorded, and killing it at exit would leave the coordinator and the agents running.
setu_bg() { node "$SETU_ROOT/dist/cli/main.js" "$@" & PIDS+=($!); }

# json_get KEY: reads one JSON document on stdin, prints its field KEY.
json_get() { "$PY" -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

PIDS=()
stop_federation() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap stop_federation EXIT

# until_true SECONDS WHAT CMD...: polls CMD until it succeeds, or gives up after SECONDS saying what it waited for.
until_true() {
  local limit=$1 what=$2 start=$SECONDS
  shift 2
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS - start > limit )); then echo "gave up after ${limit}s waiting for $what" >&2; return 1; fi
    sleep 0.2
  done
}

# start_coordinator: a coordinator on a free loopback port, its data (and admin.key) in $WORK/coordinator.
start_coordinator() {
  local port
  port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  setu_bg coordinator start --data-dir "$WORK/coordinator" --port "$port" >"$WORK/coordinator.log" 2>&1
  export SETU_COORDINATOR="http://127.0.0.1:$port"
  until_true 30 "the coordinator at $SETU_COORDINATOR" "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1])' "$SETU_COORDINATOR/v1/health"
  ADMIN=(--key-file "$WORK/coordinator/admin.key")
}

# add_study_lead: a study lead whose key is $WORK/lead.key (studies are created and started by study leads).
add_study_lead() {
  local token
  token=$(setu user add --name lead --role study_lead --json "${ADMIN[@]}" | json_get token)
  setu user enrol --token "$token" --key-file "$WORK/lead.key" >/dev/null
  LEAD=(--key-file "$WORK/lead.key")
}

# start_site NAME CONFIG: invites site NAME and starts its agent with CONFIG (its site.yaml); logs in $WORK/NAME.log.
start_site() {
  local token
  token=$(setu site invite --name "$1" --json "${ADMIN[@]}" | json_get token)
  setu_bg site start --config "$2" --token "$token" >"$WORK/$1.log" 2>&1
}

# wait_for_trainers N KIND: until N sites are online and have declared a trainer of KIND (their agents are polling).
wait_for_trainers() {
  until_true 60 "$1 sites with a declared $2 trainer" sh -c \
    "node '$SETU_ROOT/dist/cli/main.js' site list --json --key-file '$WORK/coordinator/admin.key' | '$PY' -c 'import json, sys; s = json.load(sys.stdin); sys.exit(0 if sum(1 for x in s if x[\"online\"] and (x.get(\"trainer\") or {}).get(\"kind\") == \"$2\") >= $1 else 1)'"
}

# start_external_sites PREFIX N DATASET TRAINER: N sites PREFIX-1 … PREFIX-N, site k with $WORK/data/PREFIX-k.csv as
# DATASET and the external trainer TRAINER (a Python file run with $PY, the SDK on its PYTHONPATH); waits until every
# agent is polling with its trainer declared.
start_external_sites() {
  local prefix=$1 n=$2 dataset=$3 trainer=$4 k
  for ((k = 1; k <= n; k++)); do
    mkdir -p "$WORK/$prefix-$k"
    cat >"$WORK/$prefix-$k/site.yaml" <<YAML
coordinator: $SETU_COORDINATOR
datasets:
  $dataset: { format: csv, path: $WORK/data/$prefix-$k.csv }
trainer:
  kind: external
  command: [$PY, $trainer]
  env: { PYTHONPATH: $SETU_ROOT/python/setu_trainer }
  timeoutSeconds: 600
YAML
    start_site "$prefix-$k" "$WORK/$prefix-$k/site.yaml"
  done
  wait_for_trainers "$n" external
}

# run_study FILE WEIGHTS: creates the study with its initial weights, starts it and watches it to the end (the last
# lines of `setu study status`); leaves its id in $STUDY and $WORK/study-id, its final status in $WORK/study.json.
run_study() {
  STUDY=$(setu study create --file "$1" --weights "$2" --json "${LEAD[@]}" | json_get id)
  setu study start "$STUDY" "${LEAD[@]}"
  setu study status "$STUDY" --watch "${LEAD[@]}" | tail -n 14
  setu study status "$STUDY" --json "${LEAD[@]}" >"$WORK/study.json"
  echo "$STUDY" >"$WORK/study-id"
}
