#!/usr/bin/env bash
# Creates .venv in the checkout on first use (or when requirements.lock, the package's
# build files or its C sources changed) and installs the pinned environment plus this
# package in editable mode, which compiles its optional C extensions (setup.py): the exact
# search kernel (without a C compiler FAISS serves exact search) and the PNG batch decoder
# (without a compiler or libpng's headers PIL decodes PNG files).
# Sourced by scripts/quickstart.sh and scripts/test.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.lock-sha256"
LOCK_SHA="$(cd "$ROOT" && sha256sum requirements.lock pyproject.toml setup.py \
    fewshot_metric/store/flat_topk.c fewshot_metric/data/png_decode.c | sha256sum \
    | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/python" || ! -f "$STAMP" || "$(cat "$STAMP")" != "$LOCK_SHA" ]]; then
    echo "[fewshot-metric] setting up $VENV (first run: a few minutes, ~6 GB for torch)" >&2
    python3 -m venv "$VENV"
    # torch and torchvision are pinned as a matching pair in requirements.lock:
    # never let pip pair torchvision with a different (e.g. local +cpu) torch.
    "$VENV/bin/python" -m pip install --quiet -r "$ROOT/requirements.lock"
    "$VENV/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e "$ROOT"
    "$VENV/bin/python" -c "from fewshot_metric.store import flat_kernel as k
from fewshot_metric.data import png
r = k.unavailable_reason(); r and print('[fewshot-metric] exact search will use FAISS:', r)
r = png.unavailable_reason(); r and print('[fewshot-metric] PIL will decode PNG files:', r)" >&2
    echo "$LOCK_SHA" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
