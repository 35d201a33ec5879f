#!/usr/bin/env bash
# The paper's defense on MUSIC: MinSim training, clean training features, memory banks, fine-tuning.
# Usage: [DATA_ROOT=...] [NPROC=4] ./scripts/train_defense_MUSIC.sh [flags for both steps]
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
default_root music
launch main_attack.py --dataset music --mode train --id "music-minsim" --ckpt "$CKPT" \
  --minsim_weight "${MINSIM:-default}" --save_features "$@"
launch main_defense.py --dataset music --mode train --id "music-minsim-banks" --ckpt "$CKPT" \
  --base_weights "$CKPT/music-minsim/checkpoint_best.pth" --features "$CKPT/music-minsim/features_train.pt" "$@"
