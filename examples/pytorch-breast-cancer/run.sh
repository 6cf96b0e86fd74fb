#!/usr/bin/env bash
# The breast-cancer example end to end (see README.md): three hospitals train a PyTorch model through Setu, each
# with its own trainer.py, and the result is compared with the same federation in plain PyTorch.
#   examples/pytorch-breast-cancer/run.sh        (after npm run build; WORK=dir keeps the files, SETU_PYTHON=python)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SETU_ROOT=$(cd "$HERE/../.." && pwd)
PY=${SETU_PYTHON:-/usr/bin/python3}
WORK=${WORK:-$(mktemp -d)}
TOLERANCE=${TOLERANCE:-0.01}
STUDY_FILE=${STUDY_FILE:-$HERE/study.yaml}
export PYTHONPATH="$SETU_ROOT/python/setu_trainer"
source "$SETU_ROOT/examples/lib/local-federation.sh"

# 1. The data, split across three hospitals, and the model's initial weights.
"$PY" "$HERE/prepare.py" --out "$WORK/data" --sites 3
"$PY" "$HERE/make_init.py" --out "$WORK/init.safetensors" --seed 42

# 2. A coordinator and a study lead.
start_coordinator
add_study_lead

# 3. Three hospitals, each running its own trainer.py through the Python SDK.
start_external_sites hospital 3 wdbc "$HERE/trainer.py"

# 4. The study, created with its initial weights, started, and watched to the end.
run_study "$STUDY_FILE" "$WORK/init.safetensors"

# 5. The same federation in plain PyTorch, and the comparison.
"$PY" "$HERE/reference.py" --study "$STUDY_FILE" --data "$WORK/data" --init "$WORK/init.safetensors" --save "$WORK/reference.safetensors" >"$WORK/reference.json"
"$PY" "$HERE/compare.py" "$WORK/study.json" "$WORK/reference.json" --tolerance "$TOLERANCE"
