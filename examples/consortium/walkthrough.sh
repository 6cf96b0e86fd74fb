#!/usr/bin/env bash
# The README's "Several machines" walkthrough, end to end, on this machine: a coordinator (HTTPS, in Japan), three
# hospitals in India and Japan with their site agents, the people of the consortium with their roles, a study that
# meets the shipped IN and JP policies, proposed, approved, checked, started, watched, signed off, released,
# downloaded and exported. Every directory below stands for one machine (coordinator/, sites/<name>/, people/).
#
#   bash examples/consortium/walkthrough.sh [WORKDIR]      (after npm install; WORKDIR: a new temporary directory)
#
# It listens on 127.0.0.1:7070, as the README says. Lines ending in "# (script only)" are this script's own
# plumbing (background processes, waiting for them); every other command is the README's, verbatim, and
# src/cli/consortium.e2e.test.ts checks that, then runs this script.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
WORK="${1:-$(mktemp -d -t setu-consortium-XXXXXX)}"
setu() { node "$ROOT/dist/cli/main.js" "$@"; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait || true; }
trap cleanup EXIT
# Wait for a process to say it is ready (polls its log for the line; gives up after 60 s, showing the log).
ready() { for _ in $(seq 600); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done; cat "$1"; return 1; }
mkdir -p "$WORK" && cp -r "$HERE/." "$WORK/" && cd "$WORK"
echo "working in $WORK"

# ---- walkthrough: begin ----
# 1. The coordinator host. A certificate for its address (from your CA in production; self-signed here).
mkdir -p coordinator
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=127.0.0.1 \
  -addext subjectAltName=IP:127.0.0.1 -keyout coordinator/tls.key -out coordinator/tls.crt 2>/dev/null
SETU_JURISDICTION=JP setu coordinator start --data-dir coordinator --port 7070 \
  --tls-cert coordinator/tls.crt --tls-key coordinator/tls.key > coordinator/log 2>&1 &
pids+=($!)  # (script only)
ready coordinator/log listening  # (script only)

# 2. The consortium admin (admin.key, written at first start): institutions, people, site invites.
export SETU_COORDINATOR=https://127.0.0.1:7070 SETU_CA_FILE=coordinator/tls.crt
export SETU_KEY_FILE=coordinator/admin.key
setu institution add --id aiims-delhi --name "AIIMS New Delhi" --kind hospital --jurisdiction IN
setu institution add --id pgimer --name "PGIMER Chandigarh" --kind hospital --jurisdiction IN
setu institution add --id osaka-univ --name "Osaka University Hospital" --kind hospital --jurisdiction JP
setu user add --name priya --role study_lead --institution aiims-delhi --out people/priya.invite
setu user add --name arjun --role site_admin --institution aiims-delhi --out people/arjun.invite
setu user add --name meera --role site_admin --institution pgimer --out people/meera.invite
setu user add --name kenji --role site_admin --institution osaka-univ --out people/kenji.invite
setu user add --name yuki --role auditor --institution osaka-univ --out people/yuki.invite
setu site invite --name aiims-heart --institution aiims-delhi --out sites/aiims-heart/invite
setu site invite --name pgimer-heart --institution pgimer --out sites/pgimer-heart/invite
setu site invite --name osaka-heart --institution osaka-univ --out sites/osaka-heart/invite

# 3. Each person, on their own machine: a key pair, the private half never leaves it.
setu user enrol --token-file people/priya.invite --key-file people/priya.key
setu user enrol --token-file people/arjun.invite --key-file people/arjun.key
setu user enrol --token-file people/meera.invite --key-file people/meera.key
setu user enrol --token-file people/kenji.invite --key-file people/kenji.key
setu user enrol --token-file people/yuki.invite --key-file people/yuki.key

# 4. Each hospital: enrol its site agent once, then run it (it only dials out).
setu site enrol --config sites/aiims-heart/site.yaml --token-file sites/aiims-heart/invite
setu site enrol --config sites/pgimer-heart/site.yaml --token-file sites/pgimer-heart/invite
setu site enrol --config sites/osaka-heart/site.yaml --token-file sites/osaka-heart/invite
setu site start --config sites/aiims-heart/site.yaml > sites/aiims-heart/log 2>&1 &
pids+=($!)  # (script only)
setu site start --config sites/pgimer-heart/site.yaml > sites/pgimer-heart/log 2>&1 &
pids+=($!)  # (script only)
setu site start --config sites/osaka-heart/site.yaml > sites/osaka-heart/log 2>&1 &
pids+=($!)  # (script only)
setu site list

# 5. The study lead designs the study and proposes it to the three sites.
setu study create --file study.yaml --key-file people/priya.key
setu study propose heart-in-jp --key-file people/priya.key

# 6. Each site admin approves for their own site, with the terms under which its data may be used.
setu study approve heart-in-jp --site aiims-heart --terms "heart-disease risk research" --condition "no commercial use" --key-file people/arjun.key
setu study approve heart-in-jp --site pgimer-heart --terms "heart-disease risk research" --key-file people/meera.key
setu study approve heart-in-jp --site osaka-heart --terms "heart-disease risk research" --condition "results shared with Osaka's ethics board" --key-file people/kenji.key

# 7. The lead checks the study against the IN and JP policies, starts it and watches it train.
setu study policy-check heart-in-jp --key-file people/priya.key
setu study start heart-in-jp --key-file people/priya.key
setu study status heart-in-jp --watch --key-file people/priya.key

# 8. Release: the sign-offs the policies ask for (IN: each site's admin and the consortium; JP: each site's admin).
setu model signoff heart-in-jp --site aiims-heart --key-file people/arjun.key
setu model signoff heart-in-jp --site pgimer-heart --key-file people/meera.key
setu model signoff heart-in-jp --site osaka-heart --key-file people/kenji.key
setu model signoff heart-in-jp
setu model release heart-in-jp --key-file people/priya.key

# 9. The lead takes the results home; the auditor checks the log.
setu model download heart-in-jp --out heart-in-jp.safetensors --key-file people/priya.key
setu study export heart-in-jp --format csv --out heart-in-jp.csv --key-file people/priya.key
setu model card heart-in-jp --out . --key-file people/priya.key
setu audit verify --key-file people/yuki.key
# ---- walkthrough: end ----
