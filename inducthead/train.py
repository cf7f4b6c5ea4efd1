"""`train(model, task, TrainConfig, out_dir) -> Run`: AdamW with checkpoint trajectories.

The batch for step s is `task.sample(batch_size, seed=data_seed(seed, s))`, a pure function of
the step, so a resumed run sees exactly the batches an uninterrupted one would; with the
optimizer and RNG state restored from the checkpoint, resuming on the CPU is bitwise exact. The
same property lets data-parallel ranks take their slice of the global batch
(`inducthead.distributed`, `torchrun ... -m inducthead train`) and `train_many` train K seeds as
one batched computation (`inducthead.multiseed`).

Speed: data is generated on the model's device, the loss is read back to the host only every
`log_every` steps, attention takes `scaled_dot_product_attention` unless a hook needs the
pattern, `amp` runs bf16 autocast on CUDA, `compile` runs the model through `torch.compile` with
hook guards on (hooks added or removed after compilation recompile instead of going stale), and
`cpu_threads` sets and pins the CPU threads.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from inducthead import checkpoint as ckpt
from inducthead import rundir
from inducthead.model import HookedTransformer
from inducthead.speed import compiled_forward, cpu_threads
from inducthead.tasks.base import Batch, Task
from inducthead.train_config import TrainConfig, resolve_device


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def data_seed(seed: int, step: int) -> int:
    """Seed of the batch that produces step `step` (distinct across steps and run seeds)."""
    return seed * 1_000_003 + step


def masked_loss(
    logits: torch.Tensor, batch: Batch, denominator: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean cross-entropy over the positions `batch.mask` keeps (no host sync). `denominator`
    replaces the mask count (data-parallel ranks divide by the global batch's count)."""
    nll = F.cross_entropy(logits.flatten(0, 1).float(), batch.targets.flatten(), reduction="none")
    mask = batch.mask.flatten().float()
    count = mask.sum().clamp(min=1) if denominator is None else denominator
    return (nll * mask).sum() / count


class _StopRequest:
    """Turns the first Ctrl-C into a request to stop at the next step boundary, so the final
    checkpoint is consistent; a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> _StopRequest:
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def evaluate(model: HookedTransformer, task: Task, cfg: TrainConfig, device) -> dict[str, Any]:
    """Held-out loss and cheap head scores (prefix matching, previous token) for metrics.jsonl."""
    from inducthead import scores

    was_training = model.training
    model.eval()
    row: dict[str, Any] = {}
    with torch.no_grad():
        batch = task.eval_batch(cfg.eval_batch_size, seed=cfg.seed, device=device)
        row["eval_loss"] = masked_loss(model(batch.tokens), batch).item()
        if cfg.head_scores:
            row.update(scores.training_scores(model))
    model.train(was_training)
    return row


def train(
    model: HookedTransformer,
    task: Task,
    config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    hooks: list | None = None,
) -> rundir.Run:
    """Train `model` on `task`; with `out_dir`, write run.json, metrics.jsonl and checkpoints.

    resume=True continues from the newest intact checkpoint in `out_dir` (same model config and
    task required). `hooks`: `(hook_name, fn)` forward hooks active during training (e.g. clamps).
    Ctrl-C stops at the next step, saves a checkpoint and re-raises KeyboardInterrupt.
    """
    cfg = config or TrainConfig()
    if not isinstance(model, HookedTransformer):
        raise TypeError(
            f"train expects an inducthead.HookedTransformer, got {type(model).__name__}."
        )
    if not isinstance(task, Task):
        raise TypeError(f"train expects a task from inducthead.tasks, got {type(task).__name__}.")
    task.check_model(model.cfg)
    from inducthead import distributed

    ddp = distributed.from_env(cfg.device)
    try:
        device = ddp.device if ddp else resolve_device(cfg.device)
        model.to(device)
        with cpu_threads(cfg.cpu_threads, device, ddp.local_rank if ddp else 0):
            if ddp is None:
                run = rundir.Run.create(
                    out_dir, model, task, cfg, resume=resume, overwrite=overwrite
                )
                with run.lock():
                    return _train_loop(model, task, cfg, run, device, hooks or [])
            return _train_ddp(
                model, task, cfg, out_dir, device, hooks or [], ddp, resume, overwrite
            )
    finally:
        if ddp is not None:
            ddp.close()


def _train_ddp(model, task, cfg, out_dir, device, hooks, ddp, resume, overwrite) -> rundir.Run:
    """Rank 0 owns the run directory; other ranks follow its setup (or its error)."""
    ddp.check_batch_size(cfg.batch_size)
    with contextlib.ExitStack() as stack:
        error, run = None, None
        try:
            run = rundir.Run.create(
                out_dir if ddp.is_main else None,
                model,
                task,
                cfg,
                resume=resume and ddp.is_main,
                overwrite=overwrite and ddp.is_main,
            )
            if ddp.is_main:
                stack.enter_context(run.lock())
        except Exception as e:  # tell the other ranks before raising
            error = e
        status = ddp.broadcast(None if error is None else f"{type(error).__name__}: {error}")
        if error is not None:
            raise error
        if status is not None:
            raise RuntimeError(f"rank 0 could not start the run: {status}")
        return _train_loop(model, task, cfg, run, device, hooks, ddp=ddp)


def _train_loop(model, task, cfg: TrainConfig, run, device, hooks, ddp=None) -> rundir.Run:
    optimizer = make_optimizer(model.parameters(), cfg, device)
    main = ddp is None or ddp.is_main
    start, extra = _restore(run, model, optimizer, ddp)
    schedule = set(cfg.checkpoints())
    amp = cfg.amp and device.type == "cuda"
    net = ddp.wrap(model) if ddp is not None else model
    forward = compiled_forward(net, cfg.compile) if cfg.compile else net
    model.validate_tokens(task.sample(1, seed=data_seed(cfg.seed, start + 1), device=device).tokens)
    model.check_inputs = False  # batches come from the task, validated above: no per-step sync
    tokens_per_step = cfg.batch_size * task.seq_len
    t0 = time.perf_counter() - extra.get("elapsed_s", 0.0)
    # Training loss summed since the last metrics row (saved in checkpoints: exact resume). Under
    # DDP each rank adds its slice's share; the sum is all-reduced at every log step.
    window = torch.tensor(extra.get("window_loss", 0.0), device=device)
    window_n = int(extra.get("window_n", 0))
    last: dict[str, Any] = {}

    def record(step: int, mean: float | None) -> None:
        nonlocal window_n
        row = {"step": step, "tokens": step * tokens_per_step, "lr": cfg.lr_at(max(step - 1, 0))}
        row["train_loss"] = mean
        window.zero_()
        window_n = 0
        if not main:
            return
        row.update(evaluate(model, task, cfg, device))
        row["elapsed_s"] = time.perf_counter() - t0
        last.update(row)
        run.log_metrics(row)

    def save(step: int) -> None:
        if not main:
            return
        state = {
            "elapsed_s": time.perf_counter() - t0,
            "window_loss": window.item(),
            "window_n": window_n,
        }
        run.save_checkpoint(model, optimizer, step, **state)

    model.train()
    if start == 0 and not run.resuming:  # resumed at step 0: its row and checkpoint exist
        record(0, None)
        if 0 in schedule:
            save(0)
    bar = tqdm(
        total=cfg.steps,
        initial=start,
        disable=not (cfg.progress and main),
        desc="train",
        unit="step",
    )
    step = start
    try:
        with _StopRequest() as stop, model.hooks(fwd_hooks=hooks):
            for step in range(start + 1, cfg.steps + 1):
                loss = train_step(forward, model, optimizer, task, cfg, step, device, amp, ddp)
                window += loss.detach()
                window_n += 1
                due_eval = step % cfg.eval_every == 0 or step in schedule
                stopping = stop.requested
                # Under DDP the ranks agree on stopping at log steps (a collective), never per step.
                if step % cfg.log_every == 0 or due_eval or (stopping and ddp is None):
                    if ddp is not None:
                        flags = torch.stack([window, torch.tensor(float(stopping), device=device)])
                        ddp.all_reduce_sum(flags)
                        window.copy_(flags[0] / ddp.world_size)
                        stopping = bool(flags[1] > 0)
                    mean = (window / window_n).item()  # the only host sync of a training step
                    if not math.isfinite(mean):
                        raise TrainingDiverged(
                            f"loss became {mean} by step {step}; the run stopped and its last good "
                            f"checkpoint ({run.describe_last_checkpoint()}) is kept. Lower lr "
                            f"(now {cfg.lr}) or set grad_clip."
                        )
                    bar.set_postfix(_postfix(mean, last), refresh=False)
                    if due_eval:
                        record(step, mean)
                else:
                    stopping = False  # DDP: wait for the next log step, where ranks agree
                bar.update(1)
                if step in schedule or stopping:
                    save(step)
                if stopping:
                    raise KeyboardInterrupt(
                        f"training interrupted at step {step}; checkpoint saved"
                    )
    finally:
        bar.close()
        model.check_inputs = True
    run.finish(model, step)
    return run


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


def train_step(forward, model, optimizer, task, cfg, step, device, amp=False, ddp=None):
    """One update producing step `step`: the step's batch (this rank's slice under DDP), forward
    through `forward` (the model, or its compiled / DDP wrapper), backward, clipping, AdamW.
    Returns the loss tensor (no host sync)."""
    for group in optimizer.param_groups:
        group["lr"] = cfg.lr_at(step - 1)
    batch = task.sample(cfg.batch_size, seed=data_seed(cfg.seed, step), device=device)
    denominator = None
    if ddp is not None:  # this rank's rows; scaled so DDP's mean is the global loss
        denominator = batch.mask.sum().clamp(min=1) / ddp.world_size
        batch = ddp.shard(batch)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        loss = masked_loss(forward(batch.tokens), batch, denominator)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    return loss


def _restore(run, model, optimizer, ddp) -> tuple[int, dict[str, Any]]:
    """Resume state: rank 0 (or the single process) restores from the run directory; the other
    ranks load the same checkpoint file."""
    if ddp is None:
        return run.restore(model, optimizer) if run.resuming else (0, {})
    found = None
    if ddp.is_main and run.resuming:
        step, extra = run.restore(model, optimizer)
        found = (step, extra, str(run.checkpoint_path(step)))
    found = ddp.broadcast(found)
    if found is None:
        return 0, {}
    step, extra, path = found
    if not ddp.is_main:
        tensors, meta = ckpt.read_checkpoint(path)
        model.load_state_dict(ckpt.model_state(tensors))
        ckpt.restore_optimizer(optimizer, tensors, meta)
        ckpt.restore_rng(tensors)
    return step, extra


def _postfix(loss: float, last: dict[str, Any]) -> dict[str, str]:
    out = {"loss": f"{loss:.3f}"}
    if "best_prefix_matching" in last:
        out["induction"] = f"{last['best_prefix_matching']:.2f}"
    return out
