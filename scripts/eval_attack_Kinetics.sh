#!/usr/bin/env bash
# FGSM/PGD/MIM (plus AutoAttack with AUTOATTACK=1) on audio, visual and both (the paper grid) against the model trained by train_attack_Kinetics.sh.
# Usage: [DATA_ROOT=...] [FUSION=concat] [AUTOATTACK=1] ./scripts/eval_attack_Kinetics.sh [any main_attack.py flag]
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
default_root kinetics_sounds
launch main_attack.py --dataset kinetics_sounds --mode eval --arch_classifier "$FUSION" --id "kinetics_sounds-$FUSION" \
  --ckpt "$CKPT" --attack_type "$ATTACKS" --eps_unit "$EPS_UNIT" --eps "${PAPER_GRID[@]}" --save_examples 8 "$@"
