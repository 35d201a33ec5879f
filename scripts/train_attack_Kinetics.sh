#!/usr/bin/env bash
# Train the Kinetics model with the paper's settings (epochs, lr steps, audio length from dataset/specs.py).
# Usage: [DATA_ROOT=...] [FUSION=concat] [NPROC=4] ./scripts/train_attack_Kinetics.sh [any main_attack.py flag]
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
default_root kinetics_sounds
launch main_attack.py --dataset kinetics_sounds --mode train --arch_classifier "$FUSION" --id "kinetics_sounds-$FUSION" \
  --ckpt "$CKPT" --eps_unit "$EPS_UNIT" "$@"
