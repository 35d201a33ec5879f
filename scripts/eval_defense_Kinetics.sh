#!/usr/bin/env bash
# Attack the defended Kinetics model: the paper's attack and adaptive ones (BPDA, unrolled, restarts).
# Usage: [DATA_ROOT=...] ./scripts/eval_defense_Kinetics.sh [any main_defense.py flag]
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
default_root kinetics_sounds
launch main_defense.py --dataset kinetics_sounds --mode eval --id "kinetics_sounds-minsim-banks" --ckpt "$CKPT" \
  --base_weights "$(run_file "$CKPT/kinetics_sounds-minsim" checkpoint_best)" --attack_type fgsm,pgd --adaptive \
  --eps_unit "$EPS_UNIT" --eps "${PAPER_GRID[@]}" "$@"
