"""The parser's "speed" flags: how a run uses the hardware (precision, memory format, kernels, compilation,
batching of evaluation, loader workers, the eval-crop cache).

``RESULT_NEUTRAL`` names those that leave an evaluation's numbers unchanged, so ``eval_identity`` (the
--reuse_eval hash, pipeline/config.py) ignores them: workers, --eval_batch_size (batch-independent by
design, tests/test_scale.py), --eval_cache (bitwise the same crops, tests/test_dataset.py),
--deterministic and --compile (the same computation; kernel choice or fusion may move the last bits of a
float, never an accuracy in the tests). --amp and --channels_last stay in the hash.
"""
from __future__ import annotations

import argparse

from dataset.batches import default_workers

RESULT_NEUTRAL = ("workers", "eval_batch_size", "eval_cache", "deterministic", "compile")


def add_speed_args(p: argparse.ArgumentParser) -> None:
    """Add the "speed" group to ``p`` (every dest has a RunConfig field)."""
    g = p.add_argument_group("speed")
    g.add_argument("--amp", action="store_true", help="bf16 autocast (GPU only; an error on CPU)")
    g.add_argument("--channels_last", action="store_true", help="channels_last memory format (GPU only)")
    g.add_argument("--deterministic", action="store_true",
                   help="deterministic cuDNN/cuBLAS kernels and torch.use_deterministic_algorithms (slower on GPU; "
                   "without it cudnn.benchmark is on)")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the audio and visual nets (training, evaluation and attacks); the first "
                   "batches pay the compilation")
    g.add_argument("--eval_batch_size", type=int, default=0,
                   help="batch of evaluation and attacks per process (0: --batch_size_per_gpu); results do not "
                   "depend on it")
    g.add_argument("--workers", type=int, default=default_workers(),
                   help="DataLoader worker processes per process (default: the CPU affinity's cores / "
                   "LOCAL_WORLD_SIZE - 2, at most 16; 0 on a 2-core machine, where workers compete with the "
                   "training step: see benchmarks/bench_train.py)")
    g.add_argument("--eval_cache", default="",
                   help="folder of decoded uint8 eval crops (memmap files keyed by list hash and sizes), built on "
                   "first use; for test sets read many times (adaptive evaluation)")
