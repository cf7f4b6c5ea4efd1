"""Data-parallel training across processes (`torchrun --nproc_per_node N -m inducthead train ...`).

`inducthead.training.train` calls `from_env` and, when the process was started by torchrun
(WORLD_SIZE > 1) or a process group already exists, trains with DistributedDataParallel: gloo on the
CPU, NCCL on GPUs (one per local rank). The batch of step s is a pure function of the step, so every
rank draws the same global batch and keeps its own slice of rows; the loss of a slice is scaled so
that DDP's gradient average equals the gradient of the global batch's loss: the run computes what
one process would with the same global batch (to float rounding). Only rank 0 evaluates and writes
run.json, metrics.jsonl and checkpoints; the run directory must be visible to every rank (one
machine, or a shared filesystem) when resuming.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from inducthead.recipe import resolve_device
from inducthead.tasks import Batch


@dataclass
class DistContext:
    """This process's place in a data-parallel run."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool  # we initialised the process group, so we tear it down

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def check_batch_size(self, batch_size: int) -> None:
        if batch_size % self.world_size:
            raise ValueError(
                f"batch_size {batch_size} (the global batch) must be divisible by the number of "
                f"processes ({self.world_size}); each process trains on batch_size / "
                f"{self.world_size} rows."
            )

    def shard(self, batch: Batch) -> Batch:
        """This rank's contiguous slice of the rows of the global `batch`."""
        n = len(batch) // self.world_size
        rows = slice(self.rank * n, (self.rank + 1) * n)
        info = {k: v[rows] for k, v in batch.info.items()}
        return Batch(batch.tokens[rows], batch.targets[rows], batch.mask[rows], info)

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (picklable objects only; used at setup, never per step)."""
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        # Buffers (rotary/ALiBi tables) are constants: no need to broadcast them every step.
        return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def launched_world_size() -> int:
    """Processes in this run according to torchrun's environment (1 when not launched by it)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def is_main_process() -> bool:
    """False on ranks > 0 of a torchrun launch (those print and write nothing)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0") or 0) == 0


def from_env(device: str | torch.device | None) -> DistContext | None:
    """The data-parallel context of this process, initialising the process group if torchrun
    started it; None for an ordinary single-process run."""
    if launched_world_size() <= 1 or not dist.is_available():
        return None
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device in (None, "auto"):
        dev = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    else:
        dev = resolve_device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", local_rank)
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"data-parallel training runs on 'cpu' or 'cuda', not {dev.type!r}.")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        owns = True
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, dev, owns)
