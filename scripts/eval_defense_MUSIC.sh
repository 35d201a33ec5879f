#!/usr/bin/env bash
# Attack the defended MUSIC model: the paper's attack and adaptive ones (BPDA, unrolled, restarts).
# Usage: [DATA_ROOT=...] ./scripts/eval_defense_MUSIC.sh [any main_defense.py flag]
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
default_root music
launch main_defense.py --dataset music --mode eval --id "music-minsim-banks" --ckpt "$CKPT" \
  --base_weights "$(run_file "$CKPT/music-minsim" checkpoint_best)" --attack_type fgsm,pgd --adaptive \
  --eps_unit "$EPS_UNIT" --eps "${PAPER_GRID[@]}" "$@"
