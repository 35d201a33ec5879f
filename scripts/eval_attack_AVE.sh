#!/usr/bin/env bash
# FGSM/PGD/MIM on audio, visual and both (the paper grid) against the model trained by train_attack_AVE.sh.
# Usage: [DATA_ROOT=...] [FUSION=concat] ./scripts/eval_attack_AVE.sh [any main_attack.py flag]
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
default_root ave
launch main_attack.py --dataset ave --mode eval --arch_classifier "$FUSION" --id "ave-$FUSION" \
  --ckpt "$CKPT" --attack_type all --eps_unit "$EPS_UNIT" --eps "${PAPER_GRID[@]}" --save_examples 8 "$@"
