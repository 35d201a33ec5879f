"""A context manager that puts a model in eval (or train) mode and restores every submodule's flag."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch.nn as nn


@contextlib.contextmanager
def model_mode(model: nn.Module, training: bool = False) -> Iterator[nn.Module]:
    """Set ``model.train(training)`` inside the block; afterwards each submodule gets back its own flag
    (a frozen BatchNorm in eval mode inside a training model stays in eval mode)."""
    saved = [(m, m.training) for m in model.modules()]
    model.train(training)
    try:
        yield model
    finally:
        for m, flag in saved:
            m.training = flag
