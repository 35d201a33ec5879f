#!/usr/bin/env bash
# Train the AVE model with the paper's settings (epochs, lr steps, audio length from dataset/specs.py).
# Usage: [DATA_ROOT=...] [FUSION=concat] [NPROC=4] ./scripts/train_attack_AVE.sh [any main_attack.py flag]
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
default_root ave
launch main_attack.py --dataset ave --mode train --arch_classifier "$FUSION" --id "ave-$FUSION" \
  --ckpt "$CKPT" --eps_unit "$EPS_UNIT" "$@"
