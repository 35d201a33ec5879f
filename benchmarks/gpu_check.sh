#!/usr/bin/env bash
# One-go GPU check (issue 11): the table of benchmarks/gpu_check.py at the paper's sizes, then torchrun with
# nccl and a world of 1 (the process group must still be created). Under 8 minutes on one H100.
# Exits non-zero if any row failed.   Usage: bash benchmarks/gpu_check.sh [--cpu --tiny]
set -u
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python
status=0
"$PY" benchmarks/gpu_check.py "$@" || status=1
if [ "${1:-}" != "--cpu" ]; then
    port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')
    if "$PY" -m torch.distributed.run --nproc_per_node 1 --master_port "$port" - <<'PYEOF'
import torch, torch.distributed as dist
dist.init_process_group("nccl")
torch.cuda.set_device(0)
t = torch.ones(1, device="cuda")
dist.all_reduce(t)
assert dist.get_world_size() == 1 and t.item() == 1.0
dist.destroy_process_group()
print("| torchrun --nproc_per_node 1, nccl | process group created, all_reduce ok | - | ok |")
PYEOF
    then :; else echo "| torchrun --nproc_per_node 1, nccl | failed | - | FAIL |"; status=1; fi
fi
exit $status
