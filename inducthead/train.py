"""`train(model, task, TrainConfig, out_dir) -> Run`: AdamW with checkpoint trajectories.

The batch for step s is `task.sample(batch_size, seed=data_seed(seed, s))`, a pure function of
the step, so a resumed run sees exactly the batches an uninterrupted one would; with the
optimizer and RNG state restored from the checkpoint, resuming on the CPU is bitwise exact.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from inducthead import checkpoint as ckpt
from inducthead import rundir
from inducthead.model import HookedTransformer
from inducthead.tasks.base import Batch, Task


@dataclass
class TrainConfig:
    """Optimisation, evaluation and checkpointing of one run.

    lr schedule: linear warmup over `warmup_steps`, then constant or cosine decay to
    `min_lr_ratio`·lr. Evaluation every `eval_every` steps and at every checkpoint writes a
    metrics.jsonl row (held-out loss, per-head prefix-matching and previous-token scores).
    Checkpoints: `n_checkpoints` log-spaced steps, or exactly `checkpoint_steps`. The loss is read
    back to the host (a device sync) only every `log_every` steps. `amp` = bf16 autocast (CUDA).
    """

    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: str = "constant"
    min_lr_ratio: float = 0.1
    grad_clip: float | None = 1.0
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    compile: bool = False
    eval_every: int = 50
    eval_batch_size: int = 64
    n_checkpoints: int = 50
    checkpoint_steps: tuple[int, ...] | None = None
    log_every: int = 10
    progress: bool = True
    head_scores: bool = True

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        if self.checkpoint_steps is not None:
            self.checkpoint_steps = tuple(int(s) for s in self.checkpoint_steps)
        for name in ("steps", "batch_size", "eval_every", "eval_batch_size", "log_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (name != "steps"):
                raise ValueError(
                    f"TrainConfig.{name} must be an int >= {int(name != 'steps')}, got {value!r}."
                )
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"TrainConfig.lr must be a positive number, got {self.lr!r}.")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(
                f"TrainConfig.schedule={self.schedule!r}; choose 'constant' or 'cosine'."
            )
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(
                f"TrainConfig.betas must be two numbers in [0, 1), got {self.betas!r}."
            )
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"TrainConfig.grad_clip must be None or > 0, got {self.grad_clip!r}.")
        if self.warmup_steps < 0 or self.weight_decay < 0:
            raise ValueError("TrainConfig.warmup_steps and weight_decay must be >= 0.")
        if self.n_checkpoints < 2:
            raise ValueError(f"TrainConfig.n_checkpoints must be >= 2, got {self.n_checkpoints}.")
        if self.checkpoint_steps is not None:
            bad = [s for s in self.checkpoint_steps if not 0 <= s <= self.steps]
            if bad:
                raise ValueError(
                    f"TrainConfig.checkpoint_steps {bad} lie outside [0, steps={self.steps}]."
                )
        resolve_device(self.device)  # validates the name

    def lr_at(self, step: int) -> float:
        """Learning rate for the update that produces step `step + 1`."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.schedule == "constant":
            return self.lr
        progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        floor = self.min_lr_ratio * self.lr
        return floor + (self.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    def checkpoints(self) -> list[int]:
        if self.checkpoint_steps is not None:
            return sorted({*self.checkpoint_steps, self.steps})
        return ckpt.checkpoint_schedule(self.steps, self.n_checkpoints)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"TrainConfig: unknown field(s) {unknown}; valid: {sorted(known)}.")
        return cls(**d)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    """ "auto" picks cuda > mps > cpu; anything else must name an available device."""
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device {device!r} is not a device name (try 'cpu', 'cuda', 'auto')."
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} requested but CUDA is not available here; use 'cpu' or 'auto'."
        )
    return dev


def data_seed(seed: int, step: int) -> int:
    """Seed of the batch that produces step `step` (distinct across steps and run seeds)."""
    return seed * 1_000_003 + step


def masked_loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Mean cross-entropy over the positions `batch.mask` keeps (no host sync)."""
    nll = F.cross_entropy(logits.flatten(0, 1).float(), batch.targets.flatten(), reduction="none")
    mask = batch.mask.flatten().float()
    return (nll * mask).sum() / mask.sum().clamp(min=1)


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
    device = resolve_device(cfg.device)
    model.to(device)
    run = rundir.Run.create(out_dir, model, task, cfg, resume=resume, overwrite=overwrite)
    with run.lock():
        return _train_loop(model, task, cfg, run, device, hooks or [])


def _train_loop(model, task, cfg: TrainConfig, run, device, hooks) -> rundir.Run:
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
    )
    start, extra = run.restore(model, optimizer) if run.resuming else (0, {})
    schedule = set(cfg.checkpoints())
    amp = cfg.amp and device.type == "cuda"
    forward = torch.compile(model) if cfg.compile else model
    model.validate_tokens(task.sample(1, seed=data_seed(cfg.seed, start + 1), device=device).tokens)
    model.check_inputs = False  # batches come from the task, validated above: no per-step sync
    tokens_per_step = cfg.batch_size * task.seq_len
    t0 = time.perf_counter() - extra.get("elapsed_s", 0.0)
    # Training loss summed since the last metrics row (saved in checkpoints: exact resume).
    window = torch.tensor(extra.get("window_loss", 0.0), device=device)
    window_n = int(extra.get("window_n", 0))
    last: dict[str, Any] = {}

    def record(step: int) -> None:
        nonlocal window_n
        row = {"step": step, "tokens": step * tokens_per_step, "lr": cfg.lr_at(max(step - 1, 0))}
        row["train_loss"] = (window / window_n).item() if window_n else None
        window.zero_()
        window_n = 0
        row.update(evaluate(model, task, cfg, device))
        row["elapsed_s"] = time.perf_counter() - t0
        last.update(row)
        run.log_metrics(row)

    def save(step: int) -> None:
        state = {
            "elapsed_s": time.perf_counter() - t0,
            "window_loss": window.item(),
            "window_n": window_n,
        }
        run.save_checkpoint(model, optimizer, step, **state)

    model.train()
    if start == 0:
        record(0)
        if 0 in schedule:
            save(0)
    bar = tqdm(total=cfg.steps, initial=start, disable=not cfg.progress, desc="train", unit="step")
    step = start
    try:
        with _StopRequest() as stop, model.hooks(fwd_hooks=hooks):
            for step in range(start + 1, cfg.steps + 1):
                for group in optimizer.param_groups:
                    group["lr"] = cfg.lr_at(step - 1)
                batch = task.sample(cfg.batch_size, seed=data_seed(cfg.seed, step), device=device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    loss = masked_loss(forward(batch.tokens), batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                window += loss.detach()
                window_n += 1
                due_eval = step % cfg.eval_every == 0 or step in schedule
                if step % cfg.log_every == 0 or due_eval or stop.requested:
                    mean = (window / window_n).item()  # the only host sync of a training step
                    if not math.isfinite(mean):
                        raise TrainingDiverged(
                            f"loss became {mean} by step {step}; the run stopped and its last good "
                            f"checkpoint ({run.describe_last_checkpoint()}) is kept. Lower lr "
                            f"(now {cfg.lr}) or set grad_clip."
                        )
                    bar.set_postfix(_postfix(mean, last), refresh=False)
                    if due_eval:
                        record(step)
                bar.update(1)
                if step in schedule or stop.requested:
                    save(step)
                if stop.requested:
                    raise KeyboardInterrupt(
                        f"training interrupted at step {step}; checkpoint saved"
                    )
    finally:
        bar.close()
        model.check_inputs = True
    run.finish(model, step)
    return run


def _postfix(loss: float, last: dict[str, Any]) -> dict[str, str]:
    out = {"loss": f"{loss:.3f}"}
    if "best_prefix_matching" in last:
        out["induction"] = f"{last['best_prefix_matching']:.2f}"
    return out
