#!/usr/bin/env bash
# Sets up the pinned environment (first run only) and runs the lint and the whole test suite.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m slow` for the long training runs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
ruff check .
python -m pytest "$@"
