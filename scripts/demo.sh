#!/usr/bin/env bash
# The whole study on the embedded dataset, on CPU: data -> training -> attacks -> defense -> report.
# Three seeds of the headline comparison (audio, visual, concat); the other rows on the first seed
# (pipeline/study_plan.py, demo preset). Usage: bash scripts/demo.sh [--quick] [more run_study.py flags]
# Re-running reuses finished steps (generated media, trained models, evaluations).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
OUT="runs/demo"
SEEDS=(--seeds 0 1 2)
for a in "$@"; do
  [ "$a" = "--quick" ] && OUT="runs/demo-quick" && SEEDS=()  # the smoke version: one seed
  [ "$a" = "--seeds" ] && SEEDS=()
done
# --jobs: one job per core at once, one thread each (pipeline/launchers.py; the numbers do not depend on it)
exec "$ROOT/.venv/bin/python" scripts/run_study.py --out "$OUT" --jobs "$(nproc)" "${SEEDS[@]}" "$@"
