"""Certify a trained model: randomized smoothing per modality (Cohen et al., ICML 2019) or MMCert sub-sampling of
frames and audio segments (Wang et al., CVPR 2024), on the audio, the visual input or both.

    python main_certify.py --dataset synthetic --id concat --cert_method smoothing --sigma_audio 0.25 \\
        --sigma_visual 0.25 --cert_n0 100 --cert_n 100000 --cert_alpha 0.001

Set-up only, as main_attack.py (whose flags it shares, in eval mode; the certification flags are its own group in
pipeline/flags.py): every flag, list and checkpoint is checked first, and a bad value (sigma <= 0, --cert_n too
small to certify anything at --cert_alpha, ...) prints one line and exits 2 before anything is written. The loop
lives in pipeline/certify.py; the results go to <run>/evals/<eval id>/ (certify.json, certified.md/.csv, the plot).
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from dataset.errors import MediaError
from pipeline.build import prepared
from pipeline.certify import execute_certify
from pipeline.config import add_certify_args, get_args_parser, parse_config
from utils.errors import run_cli


def main(argv: Optional[Sequence[str]] = None) -> int:
    cfg = parse_config(add_certify_args(get_args_parser()), argv, certify=True)
    ready = prepared(cfg)
    if ready is not None:  # None: this certification already finished (--reuse_eval)
        model, ctx = ready
        execute_certify(model, cfg, ctx, label=cfg.id)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, extra=(MediaError,)))
