#!/usr/bin/env bash
# FGSM/PGD/MIM (plus AutoAttack with AUTOATTACK=1) on audio, visual and both (the paper grid) against the model trained by train_attack_MUSIC.sh.
# Usage: [DATA_ROOT=...] [FUSION=concat] [AUTOATTACK=1] ./scripts/eval_attack_MUSIC.sh [any main_attack.py flag]
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
default_root music
launch main_attack.py --dataset music --mode eval --arch_classifier "$FUSION" --id "music-$FUSION" \
  --ckpt "$CKPT" --attack_type "$ATTACKS" --eps_unit "$EPS_UNIT" --eps "${PAPER_GRID[@]}" --save_examples 8 "$@"
