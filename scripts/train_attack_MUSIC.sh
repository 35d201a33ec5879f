#!/usr/bin/env bash
# Train the MUSIC model with the paper's settings (epochs, lr steps, audio length from dataset/specs.py).
# Usage: [DATA_ROOT=...] [FUSION=concat] [NPROC=4] ./scripts/train_attack_MUSIC.sh [any main_attack.py flag]
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
default_root music
launch main_attack.py --dataset music --mode train --arch_classifier "$FUSION" --id "music-$FUSION" \
  --ckpt "$CKPT" --eps_unit "$EPS_UNIT" "$@"
