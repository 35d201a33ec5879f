#!/usr/bin/env bash
# One idempotent set-up: a .venv with the pinned requirements. Safe to call again; re-installs only
# when requirements*.txt changed since the last successful run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
STAMP="$VENV/.requirements.sha256"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
want="$(cat "$ROOT/requirements.txt" "$ROOT/requirements-nodeps.txt" | sha256sum | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [ "$want" != "$have" ]; then
  echo "[setup] installing requirements into $VENV (first run takes a few minutes)"
  # pip's warnings about this machine's unused local index folders are noise: filtered out, nothing else
  quiet_pip() { "$VENV/bin/python" -m pip "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; }
  quiet_pip install --quiet --upgrade pip
  quiet_pip install --quiet -r "$ROOT/requirements.txt"
  quiet_pip install --quiet --no-deps -r "$ROOT/requirements-nodeps.txt"
  echo "$want" > "$STAMP"
else
  echo "[setup] $VENV is up to date"
fi
