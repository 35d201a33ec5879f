#!/usr/bin/env bash
# Certified robustness per modality (randomized smoothing, or CERT_METHOD=mmcert sub-sampling) of the model trained by train_attack_AVE.sh.
# Usage: [DATA_ROOT=...] [FUSION=concat] [CERT_METHOD=smoothing|mmcert] ./scripts/certify_AVE.sh [any main_certify.py flag]
# One process (the draws are per clip); defaults are Cohen et al.'s n0 = 100, n = 100000, alpha = 0.001 (slow: try --cert_n 1000).
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
default_root ave
"$PY" main_certify.py --dataset ave --arch_classifier "$FUSION" --id "ave-$FUSION" --ckpt "$CKPT" \
  --cert_method "${CERT_METHOD:-smoothing}" "$@"
