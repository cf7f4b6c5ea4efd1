"""`TrainConfig`, the training recipe: optimiser, learning-rate and checkpoint schedules,
evaluation, device and speed options of one run, validated.

Pure data: presets hold one, run directories record one (`Run.train_config`) and the trainer
follows one, so it sits below all three and imports nothing else from inducthead.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


def _check_field_types(cfg: TrainConfig) -> None:
    """Types (and the ranges not checked in `__post_init__`) of TrainConfig fields, each error
    naming its field, never a TypeError from a comparison or a silently accepted bad value
    (fuzzed in tests/test_fuzz.py)."""

    def fail(name: str, want: str) -> None:
        raise ValueError(f"TrainConfig.{name} must be {want}, got {getattr(cfg, name)!r}.")

    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    def integer(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    for name in ("amp", "progress", "head_scores"):
        if not isinstance(getattr(cfg, name), bool):
            fail(name, "True or False")
    for name in ("seed", "warmup_steps", "n_checkpoints"):
        if not integer(getattr(cfg, name)):
            fail(name, "an int")
    if not number(cfg.lr):
        fail("lr", "a positive number")
    if not number(cfg.weight_decay) or cfg.weight_decay < 0:
        fail("weight_decay", "a number >= 0")
    if not number(cfg.min_lr_ratio) or not 0 <= cfg.min_lr_ratio <= 1:
        fail("min_lr_ratio", "a number in [0, 1]")
    if cfg.grad_clip is not None and not number(cfg.grad_clip):
        fail("grad_clip", "None or a positive number")
    if not isinstance(cfg.betas, (tuple, list)) or not all(number(b) for b in cfg.betas):
        fail("betas", "two numbers in [0, 1)")
    steps = cfg.checkpoint_steps
    if steps is not None and (
        not isinstance(steps, (tuple, list)) or not all(integer(s) for s in steps)
    ):
        fail("checkpoint_steps", "None or a sequence of ints")


@dataclass
class TrainConfig:
    """Optimisation, evaluation and checkpointing of one run.

    lr schedule: linear warmup over `warmup_steps`, then constant or cosine decay to
    `min_lr_ratio`·lr. Evaluation every `eval_every` steps and at every checkpoint writes a
    metrics.jsonl row (held-out loss, per-head prefix-matching and previous-token scores).
    Checkpoints: `n_checkpoints` log-spaced steps, or exactly `checkpoint_steps`. The loss is read
    back to the host (a device sync) only every `log_every` steps. `amp` = bf16 autocast (CUDA).
    `compile`: False, True (torch.compile, inductor) or a torch.compile backend name ("inductor",
    "aot_eager", ...); hooks stay correct (`compiled_forward`). `cpu_threads`: on the CPU, use
    this many intra-op threads pinned to as many cores (per process under torchrun); None leaves
    torch's default. `batch_size` is the global batch under torchrun (split across processes).
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
    compile: bool | str = False
    eval_every: int = 50
    eval_batch_size: int = 64
    n_checkpoints: int = 50
    checkpoint_steps: tuple[int, ...] | None = None
    log_every: int = 10
    progress: bool = True
    head_scores: bool = True
    cpu_threads: int | None = None

    def __post_init__(self) -> None:
        _check_field_types(self)  # first, so the range checks below never meet a wrong type
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
        if not isinstance(self.compile, (bool, str)) or self.compile == "":
            raise ValueError(
                f"TrainConfig.compile must be True/False or a torch.compile backend name, got "
                f"{self.compile!r}."
            )
        if self.cpu_threads is not None and (
            isinstance(self.cpu_threads, bool)
            or not isinstance(self.cpu_threads, int)
            or self.cpu_threads < 1
        ):
            raise ValueError(
                f"TrainConfig.cpu_threads must be None or an int >= 1, got {self.cpu_threads!r}."
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
        return checkpoint_schedule(self.steps, self.n_checkpoints)

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

    def shortened(self, steps: int) -> TrainConfig:
        """The same recipe run for `steps`: explicit `checkpoint_steps` past it dropped and
        `steps` itself checkpointed (log-spaced checkpoints are re-spaced by `steps` anyway)."""
        if self.checkpoint_steps is None:
            return self.replace(steps=steps)
        kept = {s for s in self.checkpoint_steps if s <= steps}
        return self.replace(steps=steps, checkpoint_steps=tuple(sorted({*kept, steps})))


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


def checkpoint_schedule(total_steps: int, n: int = 50) -> list[int]:
    """`n` steps in [0, total_steps] (all of them if fewer), log-spaced so they are dense early,
    where induction heads form; always includes 0 and `total_steps`."""
    if total_steps < 0 or n < 2:
        raise ValueError(
            f"checkpoint_schedule needs total_steps >= 0 and n >= 2, got {total_steps}, {n}."
        )
    if total_steps + 1 <= n:
        return list(range(total_steps + 1))
    if n == 2:  # geomspace with one point would give [1] and lose the final step
        return [0, total_steps]
    k = n - 1
    while True:  # rounding merges early grid points: refine the grid until n distinct steps remain
        grid = np.unique(np.round(np.geomspace(1, total_steps, k)).astype(int))
        if len(grid) + 1 >= n:
            return [0, *grid.tolist()]
        k += 1
