#!/usr/bin/env bash
# The test suite: set-up (idempotent), then pytest on CPU. Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES-}"  # CPU tests; GPU paths are checked separately
# pytest exits 5 when it collects no test: that is a failure here, never a silent pass.
exec "$ROOT/.venv/bin/python" -m pytest tests -q -p no:cacheprovider "$@"
