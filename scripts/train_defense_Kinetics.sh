#!/usr/bin/env bash
# The paper's defense on Kinetics: MinSim training, clean training features, memory banks, fine-tuning.
# Flags before -- go to both steps, flags after -- only to main_defense.py.
# Usage: [DATA_ROOT=...] [NPROC=4] [MINSIM=w] ./scripts/train_defense_Kinetics.sh [flags for both] [-- defense-only flags]
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
split_args "$@"
default_root kinetics_sounds
launch main_attack.py --dataset kinetics_sounds --mode train --id "kinetics_sounds-minsim" --ckpt "$CKPT" \
  --minsim_weight "${MINSIM:-spec}" --save_features "${COMMON_ARGS[@]}"
launch main_defense.py --dataset kinetics_sounds --mode train --id "kinetics_sounds-minsim-banks" --ckpt "$CKPT" \
  --base_weights "$(run_file "$CKPT/kinetics_sounds-minsim" checkpoint_best)" --features "$(run_file "$CKPT/kinetics_sounds-minsim" features)" "${COMMON_ARGS[@]}" "${DEFENSE_ARGS[@]}"
