#!/usr/bin/env bash
# The paper's defense on AVE: MinSim training, clean training features, memory banks, fine-tuning.
# Usage: [DATA_ROOT=...] [NPROC=4] ./scripts/train_defense_AVE.sh [flags for both steps]
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
default_root ave
launch main_attack.py --dataset ave --mode train --id "ave-minsim" --ckpt "$CKPT" \
  --minsim_weight "${MINSIM:-default}" --save_features "$@"
launch main_defense.py --dataset ave --mode train --id "ave-minsim-banks" --ckpt "$CKPT" \
  --base_weights "$CKPT/ave-minsim/checkpoint_best.pth" --features "$CKPT/ave-minsim/features_train.pt" "$@"
