"""Process-group helpers for torchrun (DDP): init, rank queries and exact count reductions.

Launch with ``torchrun --nproc_per_node N main_attack.py ...``: torchrun sets RANK/WORLD_SIZE/LOCAL_RANK,
and we use nccl on GPU and gloo on CPU. Evaluation shards the data without padding (``ShardSampler``) and
sums counts in float64, so accuracy under N processes equals one process exactly.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Iterator, List, Optional

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from utils.errors import UsageError

log = logging.getLogger(__name__)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def init_distributed(device_arg: str) -> torch.device:
    """Initialise the process group when launched by torchrun and return this process's device."""
    want_cuda = device_arg.startswith("cuda") or (device_arg == "auto" and torch.cuda.is_available())
    if device_arg.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device", f"{device_arg} but CUDA is not available on this machine")
    if device_arg not in ("auto", "cpu") and not device_arg.startswith("cuda"):
        raise UsageError("--device", f"must be auto, cpu, cuda or cuda:N, got {device_arg!r}")
    if "RANK" not in os.environ and int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1:
        raise UsageError("--device", f"launched by srun with {os.environ['SLURM_NTASKS']} tasks but without RANK: "
                         "every task would train alone on the same files. Run one task per node that calls "
                         "torchrun (README, SLURM recipe), which sets RANK, WORLD_SIZE and LOCAL_RANK")
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        backend = "nccl" if want_cuda else "gloo"
        index = local_rank % torch.cuda.device_count() if want_cuda else None
        if want_cuda:
            torch.cuda.set_device(index)
        # a world of 1 still creates the group, so one-process torchrun runs take the same path
        dist.init_process_group(backend=backend)
        log.info("DDP: rank %d/%d, backend %s", rank(), world_size(), backend)
        return torch.device("cuda", index) if want_cuda else torch.device("cpu")
    if want_cuda:
        return torch.device(device_arg if device_arg.startswith("cuda") else "cuda")
    return torch.device("cpu")


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every process (identity without a process group)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def cleanup(ok: bool = True) -> None:
    """End the process group. After success the processes meet at a barrier first; on the error path there
    is none: the other processes may be inside a collective (the gradient all-reduce) that this one will
    never join, and a barrier would wait for ever. Destroying the group and exiting non-zero lets torchrun
    stop the other processes."""
    if not is_distributed():
        return
    if ok:
        dist.barrier()
    else:
        log.error("rank %d failed: leaving the process group without a barrier", rank())
    dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def _all_reduce(t: torch.Tensor, op) -> torch.Tensor:
    if not is_distributed():
        return t
    dev = t.device
    t = t.clone()
    if dist.get_backend() == "nccl" and dev.type != "cuda":
        t = t.cuda()
    dist.all_reduce(t, op=op)
    return t.to(dev)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over processes (identity without a process group)."""
    return _all_reduce(t, dist.ReduceOp.SUM)


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    """Element-wise max over processes (identity without a process group)."""
    return _all_reduce(t, dist.ReduceOp.MAX)


def ddp_ignored_buffers(module: torch.nn.Module) -> List[str]:
    """Full names of the buffers DDP must not broadcast: each submodule lists its own in a
    ``ddp_ignored_buffers`` attribute (names relative to it), e.g. buffers identical on every rank."""
    names: List[str] = []
    for prefix, sub in module.named_modules():
        for b in getattr(sub, "ddp_ignored_buffers", ()):
            names.append(f"{prefix}.{b}" if prefix else b)
    return names


def wrap_ddp(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``module`` in DistributedDataParallel on ``device``, skipping its ``ddp_ignored_buffers``."""
    ignored = ddp_ignored_buffers(module)
    if ignored:  # the only way DDP offers to skip buffers is this (private) class method
        torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, ignored)
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)


class ShardSampler(Sampler[int]):
    """Every ``world_size``-th index starting at ``rank``, no padding and no duplicates (for evaluation)."""

    def __init__(self, n: int, rank_: Optional[int] = None, world: Optional[int] = None) -> None:
        self.n = n
        self.rank = rank() if rank_ is None else rank_
        self.world = world_size() if world is None else world

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))
