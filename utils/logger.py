"""Run logging: console logging set-up, a JSON-lines metrics log and TensorBoard scalars (rank 0 only)."""
from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

from utils.fileio import append_text
from utils.rundir import FILES


def setup_logging(run_dir: Optional[Path], is_main: bool, level: int = logging.INFO) -> None:
    """Console (and <run>/log.txt on rank 0) logging for the whole process."""
    handlers: list = [logging.StreamHandler(sys.stderr)]
    if run_dir is not None and is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(run_dir / FILES["log"]))
    logging.basicConfig(level=level if is_main else logging.WARNING, force=True, handlers=handlers,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


class MetricLogger:
    """Appends one JSON object per event to <run>/metrics.jsonl and mirrors scalars to TensorBoard."""

    def __init__(self, run_dir: Path, enabled: bool = True, tensorboard: bool = True) -> None:
        self.enabled = enabled
        self.path = run_dir / FILES["metrics"]
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:  # tensorboard is in requirements.txt; say so if it is missing
                raise RuntimeError("tensorboard is not installed: run bash scripts/setup.sh") from e
            self.tb = SummaryWriter(log_dir=str(run_dir / FILES["tb"]))

    def log(self, tag: str, step: int, **values: Any) -> None:
        if not self.enabled:
            return
        rec: Dict[str, Any] = {"tag": tag, "step": step, "time": time.time(), **values}
        append_text(self.path, json.dumps(rec, default=float) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
                    self.tb.add_scalar(f"{tag}/{k}", v, step)
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
