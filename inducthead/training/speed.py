"""Speed options of the trainer: `torch.compile` that keeps hooks correct, pinned CPU threads."""

from __future__ import annotations

import contextlib
import os

import torch


def _hook_guards():
    """torch.compile normally skips guards on module hooks (`skip_nnmodule_hook_guards`), so a
    hook added after compilation would silently not run. Turn the guards on: a changed hook set
    recompiles instead."""
    config = torch._dynamo.config
    if hasattr(config, "skip_nnmodule_hook_guards"):
        return config.patch(skip_nnmodule_hook_guards=False)
    return contextlib.nullcontext()


def compiled_forward(module: torch.nn.Module, backend: bool | str = True):
    """`torch.compile(module)` whose calls keep hooks correct: hooks registered before or after
    compilation fire and can edit activations (a new hook set triggers a recompile), and the
    attention fast path is re-chosen when a pattern hook appears. `backend`: True = inductor."""
    backend = "inductor" if backend is True else backend
    compiled = torch.compile(module, backend=backend)

    def forward(*args, **kwargs):
        with _hook_guards():
            return compiled(*args, **kwargs)

    forward.compiled = compiled
    return forward


@contextlib.contextmanager
def cpu_threads(n: int | None, device: torch.device, local_rank: int = 0):
    """Use `n` intra-op threads pinned to `n` cores (cores [r·n, (r+1)·n) of this process's
    allowed set for local rank r, so data-parallel ranks on one machine never share cores)."""
    if n is None or device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    torch.set_num_threads(n)
    if affinity is not None:
        cores = sorted(affinity)
        mine = cores[local_rank * n : (local_rank + 1) * n]
        if len(mine) == n:  # fewer cores than asked: leave the affinity alone
            os.sched_setaffinity(0, mine)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if affinity is not None:
            os.sched_setaffinity(0, affinity)
