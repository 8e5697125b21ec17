#!/usr/bin/env bash
# Sets up the pinned environment (first run only), trains the quickstart recipe on the
# built-in glyphs data (no download) and tests it on held-out classes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
fewshot-metric train recipes/quickstart.yaml --out runs/quickstart "$@"
