#!/usr/bin/env bash
# The digits example end to end (see README.md): three sites train a small CNN on their own images through Setu,
# each keeping its BatchNorm layers (FedBN). Ends with each site's test accuracy of the final model.
#   examples/pytorch-digits-cnn/run.sh        (after npm run build; WORK=dir keeps the files, SETU_PYTHON=python)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SETU_ROOT=$(cd "$HERE/../.." && pwd)
PY=${SETU_PYTHON:-/usr/bin/python3}
WORK=${WORK:-$(mktemp -d)}
export PYTHONPATH="$SETU_ROOT/python/setu_trainer"
source "$SETU_ROOT/examples/lib/local-federation.sh"

"$PY" "$HERE/prepare.py" --out "$WORK/data" --sites 3
"$PY" "$HERE/make_init.py" --out "$WORK/init.safetensors"
start_coordinator
add_study_lead
start_external_sites site 3 digits "$HERE/trainer.py"
run_study "$HERE/study.yaml" "$WORK/init.safetensors"
"$PY" - "$WORK/study.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
final = s["spec"]["rounds"]
acc = {m["site"] or "pooled": m["value"] for m in s["metrics"] if m["round"] == final and m["phase"] == "evaluate" and m["name"] == "accuracy"}
for site, v in sorted(acc.items(), key=lambda x: x[0] == "pooled"):
    print(f"{site:<8} test accuracy {v:.4f}")
sys.exit(0 if s["status"] == "completed" else 1)
PY
