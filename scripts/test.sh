#!/usr/bin/env bash
# The test suite: set-up (idempotent), then pytest on CPU. Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
# The browser test of the generated pages needs Chromium: installed through apt when it is missing and we
# may (root, as in CI); otherwise say why, and that test skips. Idempotent: nothing happens when present.
if ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[test] installing chromium through apt-get for the browser test (once; about 1-2 minutes)"
    t0=$SECONDS
    log="$(mktemp)"
    if { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
         chromium fonts-liberation; } >"$log" 2>&1; then
      echo "[test] chromium installed in $((SECONDS - t0)) s"
    else
      tail -5 "$log"
      echo "[test] apt-get could not install chromium: the browser test will be skipped"
    fi
    rm -f "$log"
  else
    echo "[test] chromium is missing and cannot be installed here ($( [ "$(id -u)" = 0 ] || echo 'not root'; \
command -v apt-get >/dev/null 2>&1 || echo 'no apt-get')): the browser test will be skipped;" \
         "install it with: apt-get install chromium"
  fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES-}"  # CPU tests; GPU paths are checked separately
# pytest exits 5 when it collects no test: that is a failure here, never a silent pass.
exec "$ROOT/.venv/bin/python" -m pytest tests -q -p no:cacheprovider "$@"
