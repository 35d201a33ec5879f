#!/usr/bin/env bash
# The paper's defense on MUSIC: MinSim training, clean training features, memory banks, fine-tuning.
# Flags before -- go to both steps, flags after -- only to main_defense.py.
# Usage: [DATA_ROOT=...] [NPROC=4] [MINSIM=w] ./scripts/train_defense_MUSIC.sh [flags for both] [-- defense-only flags]
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
split_args "$@"
default_root music
launch main_attack.py --dataset music --mode train --id "music-minsim" --ckpt "$CKPT" \
  --minsim_weight "${MINSIM:-spec}" --save_features "${COMMON_ARGS[@]}"
launch main_defense.py --dataset music --mode train --id "music-minsim-banks" --ckpt "$CKPT" \
  --base_weights "$(run_file "$CKPT/music-minsim" checkpoint_best)" --features "$(run_file "$CKPT/music-minsim" features)" "${COMMON_ARGS[@]}" "${DEFENSE_ARGS[@]}"
