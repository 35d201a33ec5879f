#!/usr/bin/env bash
# Attack the defended AVE model: the paper's attack and adaptive ones (BPDA, unrolled, restarts).
# Usage: [DATA_ROOT=...] ./scripts/eval_defense_AVE.sh [any main_defense.py flag]
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
default_root ave
launch main_defense.py --dataset ave --mode eval --id "ave-minsim-banks" --ckpt "$CKPT" \
  --base_weights "$(run_file "$CKPT/ave-minsim" checkpoint_best)" --attack_type fgsm,pgd --adaptive \
  --eps_unit "$EPS_UNIT" --eps "${PAPER_GRID[@]}" "$@"
