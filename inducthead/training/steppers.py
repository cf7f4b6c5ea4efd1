"""Steppers: what one training step is in each execution mode; `inducthead.training.loop.fit`
does everything around the steps (records, evaluation, checkpoints, stopping) once for all.

A stepper owns K models trained together (K = 1 except for `VmappedStepper`) and their optimizers
in the form a checkpoint stores. `SingleStepper` trains one model in this process, or this rank's
replica under DistributedDataParallel; `inducthead.training.vmapped.VmappedStepper` trains K seeds
as one batched computation.

The batch for step s of a run with seed r is `task.sample(batch_size, seed=data_seed(r, s))`, a
pure function of the step, so a resumed run sees exactly the batches an uninterrupted one would,
data-parallel ranks can take their slice of the global batch, and K seeds can be batched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from inducthead.model import HookedTransformer, masked_loss
from inducthead.recipe import TrainConfig
from inducthead.runs import checkpoint as ckpt
from inducthead.runs.writer import RunWriter, load_training_state
from inducthead.tasks import Batch, Task
from inducthead.training.distributed import DistContext
from inducthead.training.speed import compiled_forward


def data_seed(seed: int, step: int) -> int:
    """Seed of the batch that produces step `step` (distinct across steps and run seeds)."""
    return seed * 1_000_003 + step


def batch_loss(logits: torch.Tensor, batch: Batch, denominator=None) -> torch.Tensor:
    """The training loss: mean cross-entropy over the positions `batch.mask` keeps."""
    return masked_loss(logits, batch.targets, batch.mask, denominator)


def make_optimizer(params, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with `cfg`'s settings; the fused kernel (one pass per tensor: a 4x faster update at
    the Olsson-768 size on the CPU, and far fewer thread synchronisations) where this torch and
    device have it, else the default implementation. Same update rule either way."""
    params = list(params)
    kwargs = dict(lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if device.type in ("cpu", "cuda"):
        try:
            return torch.optim.AdamW(params, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):  # older torch, unsupported dtype
            pass
    return torch.optim.AdamW(params, **kwargs)


def set_lr(optimizer: torch.optim.Optimizer, cfg: TrainConfig, step: int) -> None:
    """The scheduled learning rate of the update that produces step `step`."""
    for group in optimizer.param_groups:
        group["lr"] = cfg.lr_at(step - 1)


def train_step(forward, model, optimizer, task, cfg, step, device, amp=False, ddp=None):
    """One update producing step `step`: the step's batch (this rank's slice under DDP), forward
    through `forward` (the model, or its compiled / DDP wrapper), backward, clipping, AdamW.
    Returns the loss tensor (no host sync)."""
    set_lr(optimizer, cfg, step)
    batch = task.sample(cfg.batch_size, seed=data_seed(cfg.seed, step), device=device)
    denominator = None
    if ddp is not None:  # this rank's rows; scaled so DDP's mean is the global loss
        denominator = batch.mask.sum().clamp(min=1) / ddp.world_size
        batch = ddp.shard(batch)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        loss = batch_loss(forward(batch.tokens), batch, denominator)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    return loss


class Stepper:
    """The interface `fit` drives. Subclasses set `models`, `optimizers`, `configs` (one
    TrainConfig per run, differing only in the seed), `task` and `device`."""

    models: list[HookedTransformer]
    optimizers: list[torch.optim.Optimizer]
    configs: list[TrainConfig]
    task: Task
    device: torch.device
    label = "train"  # progress-bar description
    is_main = True  # this process evaluates, logs and writes (False on DDP ranks > 0)

    def start(self, writers: list[RunWriter]) -> tuple[int, list[dict[str, Any]]]:
        """Restore the runs that resume; returns the step they stand at and the trainer state
        saved with each (empty for new runs). Then checks the first batch and gets ready."""
        raise NotImplementedError

    def step(self, step: int) -> torch.Tensor:
        """One update of every model producing step `step`; their losses `[K]` (no host sync)."""
        raise NotImplementedError

    def sync(self, step: int, with_optimizer: bool = False) -> None:
        """Make `models` (and `optimizers`) hold the state after `step` (a no-op unless the
        stepper trains copies of them)."""

    def agree(self, window: torch.Tensor, stopping: bool) -> tuple[torch.Tensor, bool]:
        """The summed training losses and the stop request, as all processes see them."""
        return window, stopping

    collective = False  # True when `agree` is a collective every process must reach together

    def hooks(self, hooks: list) -> contextlib.AbstractContextManager:
        """Forward hooks active during training."""
        raise NotImplementedError

    def close(self) -> None:
        """Undo what `start` changed on the models."""


class SingleStepper(Stepper):
    """One model: trained in this process, or as this rank's replica under DDP (`ddp`)."""

    def __init__(self, model, task: Task, cfg: TrainConfig, device, ddp: DistContext | None = None):
        self.model, self.task, self.device, self.ddp = model, task, device, ddp
        self.cfg = cfg
        self.models, self.configs = [model], [cfg]
        self.optimizer = make_optimizer(model.parameters(), cfg, device)
        self.optimizers = [self.optimizer]
        self.amp = cfg.amp and device.type == "cuda"
        self.is_main = ddp is None or ddp.is_main
        self.collective = ddp is not None
        self.forward = None

    def start(self, writers):
        (writer,) = writers
        start, extra = self._restore(writer)
        net = self.ddp.wrap(self.model) if self.ddp is not None else self.model
        self.forward = compiled_forward(net, self.cfg.compile) if self.cfg.compile else net
        seed = data_seed(self.cfg.seed, start + 1)
        self.model.validate_tokens(self.task.sample(1, seed=seed, device=self.device).tokens)
        self.model.check_inputs = False  # batches come from the task, checked above: no sync
        self._fast = self.model.fast_attention()
        self._fast.__enter__()
        return start, [extra]

    def _restore(self, writer: RunWriter) -> tuple[int, dict[str, Any]]:
        """Rank 0 (or the single process) restores from the run directory; the other ranks
        load the same checkpoint file."""
        ddp = self.ddp
        if ddp is None:
            return writer.restore(self.model, self.optimizer) if writer.resuming else (0, {})
        found = None
        if ddp.is_main and writer.resuming:
            step, extra = writer.restore(self.model, self.optimizer)
            found = (step, extra, str(writer.checkpoint_path(step)))
        found = ddp.broadcast(found)
        if found is None:
            return 0, {}
        step, extra, path = found
        if not ddp.is_main:
            tensors, meta = ckpt.read_checkpoint(path)
            load_training_state(tensors, meta, self.model, self.optimizer)
        return step, extra

    def step(self, step: int) -> torch.Tensor:
        loss = train_step(
            self.forward,
            self.model,
            self.optimizer,
            self.task,
            self.cfg,
            step,
            self.device,
            self.amp,
            self.ddp,
        )
        return loss.detach().view(1)

    def agree(self, window, stopping):
        if self.ddp is None:
            return window, stopping
        flags = torch.cat([window, torch.tensor([float(stopping)], device=window.device)])
        self.ddp.all_reduce_sum(flags)
        window.copy_(flags[:-1] / self.ddp.world_size)
        return window, bool(flags[-1] > 0)

    @contextlib.contextmanager
    def hooks(self, hooks) -> Iterator[None]:
        with self.model.hooks(fwd_hooks=hooks):
            yield

    def close(self) -> None:
        self.model.check_inputs = True
        if getattr(self, "_fast", None) is not None:
            self._fast.__exit__(None, None, None)
            self._fast = None
