# Shared by the per-dataset scripts; source it, then call run_attack/run_defense.
# Environment (all optional):
#   DATA_ROOT  media root holding data/audio and data/frames   (default: media/<dataset> in the repo)
#   CKPT       folder for run folders                          (default: runs)
#   NPROC      processes (GPUs) on this node; >1 uses torchrun (default: 1)
#   EPS_UNIT   visual eps unit: normalized (paper/reference convention) or input   (default: normalized)
#   FUSION     fusion head for the attack scripts               (default: concat)
#   AUTOATTACK 1: the attack scripts also run autoattack (APGD-CE, APGD-T, Square; slow)   (default: off)
#   ATTACKS    --attack_type of the attack scripts  (default: fgsm,pgd,mim, plus autoattack if AUTOATTACK=1)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
if [ -z "${SKIP_SETUP:-}" ]; then bash scripts/setup.sh >&2; fi
PY="${PYTHON:-$ROOT/.venv/bin/python}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
CKPT="${CKPT:-runs}"
NPROC="${NPROC:-1}"
EPS_UNIT="${EPS_UNIT:-normalized}"
FUSION="${FUSION:-concat}"
ATTACKS="${ATTACKS:-fgsm,pgd,mim${AUTOATTACK:+,autoattack}}"
if [ "${AUTOATTACK:-}" = 0 ]; then ATTACKS="${ATTACKS%,autoattack}"; fi
# The paper's grid (docs/paper.md, Attacks): (v, a) in {(0,0), (0,0.012), (0.012,0), (0.006,0.006)}.
PAPER_GRID=("visual=0,audio=0" "visual=0,audio=0.012" "visual=0.012,audio=0" "visual=0.006,audio=0.006")

run_file() {  # run_file RUN_FOLDER KEY: a file of a run folder, named by utils/rundir.py (never spelled here)
  "$PY" -m utils.rundir "$1" "$2"
}

launch() {  # launch MAIN ARGS...: one process, or torchrun with NPROC processes
  local main="$1"; shift
  if [ "$NPROC" -gt 1 ]; then
    "$PY" -m torch.distributed.run --standalone --nproc_per_node "$NPROC" "$main" "$@"
  else
    "$PY" "$main" "$@"
  fi
}

default_root() {  # default_root DATASET: export DATA_ROOT unless set
  export DATA_ROOT="${DATA_ROOT:-$ROOT/media/$1}"
  if [ ! -d "$DATA_ROOT/data/frames" ] || [ ! -d "$DATA_ROOT/data/audio" ]; then
    echo "error: $DATA_ROOT/data/{frames,audio} not found: prepare the dataset (README, 'Real datasets') or set DATA_ROOT" >&2
    exit 2
  fi
}

split_args() {  # split_args ARGS...: before "--" -> COMMON_ARGS (both steps), after -> DEFENSE_ARGS
  COMMON_ARGS=(); DEFENSE_ARGS=()
  local seen=0 a
  for a in "$@"; do
    if [ "$seen" = 0 ] && [ "$a" = "--" ]; then seen=1
    elif [ "$seen" = 1 ]; then DEFENSE_ARGS+=("$a")
    else COMMON_ARGS+=("$a"); fi
  done
}
