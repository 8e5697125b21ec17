#!/usr/bin/env bash
# The whole flow on built-in data (no download): sets up the pinned environment (first run
# only), trains the quickstart recipe on the glyphs data and tests it on held-out classes
# (skipped when runs/quickstart/best.safetensors exists and no arguments are given; extra
# arguments go to `fewshot-metric train`), then registers 200 glyph classes the model never saw
# from 5 images each into a store and queries 15 other images of each (fewshot_metric/demo.py).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
CHECKPOINT=runs/quickstart/best.safetensors
if [[ -f "$CHECKPOINT" && $# -eq 0 ]]; then
  echo "reusing $CHECKPOINT (delete runs/quickstart to train again)"
else
  fewshot-metric train recipes/quickstart.yaml --out runs/quickstart "$@"
fi
python -m fewshot_metric.demo --checkpoint "$CHECKPOINT" --out runs/quickstart/demo
