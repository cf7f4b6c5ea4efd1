"""`fit`: the one training loop, shared by `train`, `train_many` and the data-parallel path.

It drives a stepper (`inducthead.training.steppers`) and does everything around the updates once
for every execution mode: the metrics rows (training loss since the last row, held-out loss, head
scores), the checkpoint schedule, Ctrl-C (stop at a step boundary and save), divergence, hooks
and the progress bar. The loss is read back to the host only every `log_every` steps.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from typing import Any

import torch

from inducthead._progress import progress_bar
from inducthead.analysis.scores import training_scores
from inducthead.recipe import TrainConfig
from inducthead.runs import Run, RunWriter
from inducthead.tasks import Task
from inducthead.training.steppers import Stepper, batch_loss, data_seed


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class StopRequest:
    """Turns the first Ctrl-C into a request to stop at the next step boundary, so the final
    checkpoint is consistent; a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> StopRequest:
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


def evaluate(model, task: Task, cfg: TrainConfig, device) -> dict[str, Any]:
    """Held-out loss and cheap head scores (prefix matching, previous token) for metrics.jsonl."""
    was_training = model.training
    model.eval()
    row: dict[str, Any] = {}
    with torch.no_grad():
        batch = task.eval_batch(cfg.eval_batch_size, seed=cfg.seed, device=device)
        row["eval_loss"] = batch_loss(model(batch.tokens), batch).item()
        if cfg.head_scores:
            row.update(training_scores(model))
    model.train(was_training)
    return row


def fit(stepper: Stepper, writers: list[RunWriter], hooks: list | None = None) -> list[Run]:
    """Train the stepper's K models to `steps`, writing run k through `writers[k]` (their locks
    held by the caller); returns the K finished runs."""
    cfg, task, device = stepper.configs[0], stepper.task, stepper.device
    K = len(stepper.models)
    main = stepper.is_main
    start, extras = stepper.start(writers)
    schedule = set(cfg.checkpoints())
    tokens_per_step = cfg.batch_size * task.seq_len
    t0 = time.perf_counter() - extras[0].get("elapsed_s", 0.0)
    # Training loss summed since the last metrics row (saved in checkpoints: exact resume). Under
    # DDP each rank adds its slice's share; `agree` all-reduces the sum at every log step.
    window = torch.tensor([e.get("window_loss", 0.0) for e in extras], device=device)
    window_n = int(extras[0].get("window_n", 0))
    last: list[dict[str, Any]] = [{} for _ in range(K)]

    def record(step: int, means: list[float] | None) -> None:
        nonlocal window_n
        window.zero_()
        window_n = 0
        if not main:
            return
        stepper.sync(step)
        for k, (model, writer) in enumerate(zip(stepper.models, writers, strict=True)):
            row = {
                "step": step,
                "tokens": step * tokens_per_step,
                "lr": cfg.lr_at(max(step - 1, 0)),
            }
            row["train_loss"] = None if means is None else means[k]
            row.update(evaluate(model, task, stepper.configs[k], device))
            row["elapsed_s"] = time.perf_counter() - t0
            last[k] = row
            writer.log_metrics(row)

    def save(step: int) -> None:
        if not main:
            return
        stepper.sync(step, with_optimizer=True)
        elapsed = time.perf_counter() - t0
        for k, writer in enumerate(writers):
            state = {"elapsed_s": elapsed, "window_loss": window[k].item(), "window_n": window_n}
            writer.save_checkpoint(stepper.models[k], stepper.optimizers[k], step, **state)

    for model in stepper.models:
        model.train()
    if start == 0 and not any(w.resuming for w in writers):  # resumed at 0: its row exists
        record(0, None)
        if 0 in schedule:
            save(0)
    bar = progress_bar(
        total=cfg.steps,
        initial=start,
        disable=not (cfg.progress and main),
        desc=stepper.label,
        unit="step",
    )
    step = start
    try:
        with StopRequest() as stop, stepper.hooks(hooks or []), _own_rng(device):
            for step in range(start + 1, cfg.steps + 1):
                # Whatever draws from torch's global generator (a hook, dropout) draws the same
                # numbers at step s in a straight run and a resumed one, in any process.
                torch.manual_seed(data_seed(cfg.seed, step))
                window += stepper.step(step)
                window_n += 1
                due_eval = step % cfg.eval_every == 0 or step in schedule
                stopping = stop.requested
                # Collective steppers (DDP) agree on stopping at log steps, never per step.
                if step % cfg.log_every == 0 or due_eval or (stopping and not stepper.collective):
                    window, stopping = stepper.agree(window, stopping)
                    means = (window / window_n).tolist()  # the only host sync of a step
                    _check_finite(means, step, stepper, writers)
                    bar.set_postfix(_postfix(means, last), refresh=False)
                    if due_eval:
                        record(step, means)
                else:
                    stopping = False  # wait for the next log step, where processes agree
                bar.update(1)
                if step in schedule or stopping:
                    save(step)
                if stopping:
                    saved = "checkpoint" if K == 1 else "checkpoints"
                    raise KeyboardInterrupt(f"training interrupted at step {step}; {saved} saved")
    except KeyboardInterrupt:
        if main:  # run.json says so, and which checkpoint holds the state
            for writer in writers:
                writer.interrupted()
        raise
    finally:
        bar.close()
        stepper.close()
    stepper.sync(step)
    return [w.finish(m, step) for w, m in zip(writers, stepper.models, strict=True)]


def _own_rng(device: torch.device):
    """Training reseeds torch's global generators each step; the caller's state is put back."""
    cuda = [device.index or 0] if device.type == "cuda" else []
    return torch.random.fork_rng(devices=cuda)


def _check_finite(means: list[float], step: int, stepper: Stepper, writers) -> None:
    bad = [k for k, v in enumerate(means) if not math.isfinite(v)]
    if not bad:
        return
    cfg = stepper.configs[0]
    if len(means) == 1:
        where, kept = "", f"its last good checkpoint ({writers[0].describe_last_checkpoint()})"
    else:
        seeds = [stepper.configs[k].seed for k in bad]
        where = f" for seed(s) {seeds}"
        each = ", ".join(
            f"seed {c.seed}: {w.describe_last_checkpoint()}"
            for c, w in zip(stepper.configs, writers, strict=True)
        )
        kept = f"every run's last good checkpoint ({each})"
    raise TrainingDiverged(
        f"loss became {means[bad[0]]} by step {step}{where}; the run stopped and {kept} is kept. "
        f"Lower lr (now {cfg.lr}) or set grad_clip."
    )


def _postfix(means: list[float], last: list[dict[str, Any]]) -> dict[str, str]:
    out = {"loss": f"{sum(means) / len(means):.3f}"}
    induction = [r["best_prefix_matching"] for r in last if "best_prefix_matching" in r]
    if induction:
        out["induction"] = f"{max(induction):.2f}"
    return out
