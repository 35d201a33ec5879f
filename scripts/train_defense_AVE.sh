#!/usr/bin/env bash
# The paper's defense on AVE: MinSim training, clean training features, memory banks, fine-tuning.
# Flags before -- go to both steps, flags after -- only to main_defense.py.
# Usage: [DATA_ROOT=...] [NPROC=4] [MINSIM=w] ./scripts/train_defense_AVE.sh [flags for both] [-- defense-only flags]
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
split_args "$@"
default_root ave
launch main_attack.py --dataset ave --mode train --id "ave-minsim" --ckpt "$CKPT" \
  --minsim_weight "${MINSIM:-spec}" --save_features "${COMMON_ARGS[@]}"
launch main_defense.py --dataset ave --mode train --id "ave-minsim-banks" --ckpt "$CKPT" \
  --base_weights "$(run_file "$CKPT/ave-minsim" checkpoint_best)" --features "$(run_file "$CKPT/ave-minsim" features)" "${COMMON_ARGS[@]}" "${DEFENSE_ARGS[@]}"
