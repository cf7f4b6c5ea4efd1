"""`train_many`: K seeds of one architecture trained in one process as one batched computation.

The K models' parameters are stacked along a leading model dimension
(`torch.func.stack_module_state`) and the model's own forward runs under `torch.func.vmap`
(`functional_call`), so every step is one batched forward, one backward and one AdamW update for
all K models. Seed k's run computes exactly what `train` computes for that seed (same init, same
per-step batches `data_seed(seed_k, step)`, per-model loss, per-model gradient clipping, AdamW is
elementwise): equal to float rounding, tested to 1e-5. Each run writes its own run directory in
`train`'s format (run.json, metrics.jsonl, checkpoints that `inducthead.load`, `Run` and
`train(resume=True)` read); `elapsed_s` there is the wall time of the shared computation.

Where it pays: on a GPU, small models leave the device idle and K models in one kernel stream
run several times faster than one after another; on the CPU a demo-sized model is already
compute-bound, so the gain is one process and one command for K runs (benchmarks/multiseed.py).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.func import functional_call, stack_module_state, vmap
from tqdm.auto import tqdm

from inducthead import rundir
from inducthead.config import HookedTransformerConfig
from inducthead.model import HookedTransformer
from inducthead.speed import compiled_forward
from inducthead.tasks.base import Batch, Task
from inducthead.train import (
    TrainingDiverged,
    _StopRequest,
    data_seed,
    evaluate,
    make_optimizer,
    masked_loss,
)
from inducthead.train_config import TrainConfig, resolve_device


def _resolve(config, task, train_config):
    """(model config, task, train config) from a config, a Preset or a preset name."""
    from inducthead import configs

    if isinstance(config, str):
        config = configs.get(config)
    if isinstance(config, configs.Preset):
        task = task if task is not None else config.make_task()
        train_config = train_config if train_config is not None else config.train
        config = config.model
    if not isinstance(config, HookedTransformerConfig):
        raise TypeError(
            "train_many expects a HookedTransformerConfig, a Preset or a preset name, got "
            f"{type(config).__name__}."
        )
    if not isinstance(task, Task):
        raise TypeError(
            f"train_many expects a task from inducthead.tasks, got {type(task).__name__}."
        )
    return config, task, train_config or TrainConfig()


def _run_dirs(out_dir, seeds: list[int]) -> list[Path | None]:
    if out_dir is None:
        return [None] * len(seeds)
    if isinstance(out_dir, (str, Path)):
        return [Path(out_dir) / f"seed_{s}" for s in seeds]
    dirs = [Path(d) for d in out_dir]
    if len(dirs) != len(seeds) or len(set(dirs)) != len(dirs):
        raise ValueError(
            f"train_many: out_dir lists {len(dirs)} directories for {len(seeds)} seeds; give one "
            "distinct directory per seed, or one root directory (runs go to ROOT/seed_<seed>)."
        )
    return dirs


def train_many(
    config: HookedTransformerConfig | Any,
    task: Task | None = None,
    seeds: Sequence[int] = (0,),
    train_config: TrainConfig | None = None,
    out_dir: str | Path | Sequence[str | Path] | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
) -> list[rundir.Run]:
    """Train one model per seed (model init and data both seeded by it) as one batched
    computation; returns one `Run` per seed, in order.

    config: a HookedTransformerConfig, a Preset or a preset name (whose task and recipe are the
    defaults). out_dir: a root (seed s goes to ROOT/seed_s), a list of one directory per seed, or
    None (in memory). resume=True continues the runs from their newest checkpoints; they must all
    stand at the same step (all new, or all interrupted together).

    The same, to float rounding, as `[train(HookedTransformer(config.replace(seed=s)), task,
    train_config.replace(seed=s), dir_s) for s in seeds]`.
    """
    model_cfg, task, cfg = _resolve(config, task, train_config)
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"train_many needs one or more distinct seeds, got {seeds}.")
    from inducthead import distributed

    if distributed.launched_world_size() > 1:
        raise ValueError("train_many runs in one process; launch it without torchrun.")
    task.check_model(model_cfg)
    device = resolve_device(cfg.device)
    cfgs = [cfg.replace(seed=s) for s in seeds]
    models = [HookedTransformer(model_cfg.replace(seed=s)).to(device) for s in seeds]
    runs = [
        rundir.Run.create(d, m, task, c, resume=resume, overwrite=overwrite)
        for d, m, c in zip(_run_dirs(out_dir, seeds), models, cfgs, strict=True)
    ]
    with contextlib.ExitStack() as stack:
        for run in runs:
            stack.enter_context(run.lock())
        return _Batched(models, runs, task, cfgs, device).train()


class _Batched:
    """The stacked models, their AdamW state and the training loop."""

    def __init__(self, models, runs, task, cfgs, device):
        self.models, self.runs, self.task, self.cfgs, self.device = models, runs, task, cfgs, device
        self.cfg = cfgs[0]
        self.seeds = [c.seed for c in cfgs]
        self.K = len(models)
        cfg = self.cfg
        self.optims = [make_optimizer(m.parameters(), cfg, device) for m in models]
        self.start, self.extras = self._restore()
        params, buffers = stack_module_state(models)
        self.names = list(params)
        self.params, self.buffers = params, buffers
        self.optim = make_optimizer(params.values(), cfg, device)
        if self.start:
            self._stack_optimizer_state()
        base = copy.deepcopy(models[0]).to("meta")
        base.check_inputs = False  # no data-dependent checks under vmap; batches are validated
        for block in base.blocks:  # one attention call for all K models (vmap_attention)
            block.attn.fold_vmap = True

        def loss_one(p, b, tokens, targets, mask):
            logits = functional_call(base, (p, b), (tokens,))
            return masked_loss(logits, Batch(tokens, targets, mask))

        self.losses = vmap(loss_one)
        if cfg.compile:
            self.losses = compiled_forward(self.losses, cfg.compile)

    # -------------------------------------------------------------- state between the forms
    def _restore(self) -> tuple[int, list[dict[str, Any]]]:
        found = [
            run.restore(m, o) if run.resuming else (0, {})
            for run, m, o in zip(self.runs, self.models, self.optims, strict=True)
        ]
        steps = sorted({s for s, _ in found})
        if len(steps) > 1:
            where = ", ".join(
                f"seed {seed}: step {s}" for seed, (s, _) in zip(self.seeds, found, strict=True)
            )
            raise rundir.RunDirError(
                f"train_many: the runs to resume stand at different steps ({where}); resume "
                "them one by one with train(..., resume=True), or overwrite them."
            )
        return steps[0], [e for _, e in found]

    def _stack_optimizer_state(self) -> None:
        for i, p in enumerate(self.optim.param_groups[0]["params"]):
            per_model = [o.state[o.param_groups[0]["params"][i]] for o in self.optims]
            state = {"step": per_model[0]["step"].clone()}
            for key in ("exp_avg", "exp_avg_sq"):
                state[key] = torch.stack([s[key] for s in per_model]).to(p.device)
            self.optim.state[p] = state

    def _unstack(self, with_optimizer: bool) -> None:
        """Copy the stacked weights (and AdamW state) into the K models (and their optimizers),
        for evaluation and checkpoints in `train`'s format."""
        lr = self.optim.param_groups[0]["lr"]
        with torch.no_grad():
            for k, (model, optim) in enumerate(zip(self.models, self.optims, strict=True)):
                own = dict(model.named_parameters())
                for name in self.names:
                    own[name].copy_(self.params[name][k])
                if not with_optimizer:
                    continue
                optim.param_groups[0]["lr"] = lr
                for name, stacked in self.params.items():
                    state = self.optim.state.get(stacked)
                    if state:
                        optim.state[own[name]] = {
                            "step": state["step"].clone(),
                            "exp_avg": state["exp_avg"][k].clone(),
                            "exp_avg_sq": state["exp_avg_sq"][k].clone(),
                        }

    # -------------------------------------------------------------- the loop
    def _batches(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        bs = [
            self.task.sample(self.cfg.batch_size, seed=data_seed(s, step), device=self.device)
            for s in self.seeds
        ]
        return (
            torch.stack([b.tokens for b in bs]),
            torch.stack([b.targets for b in bs]),
            torch.stack([b.mask for b in bs]),
        )

    def _clip(self, max_norm: float) -> None:
        """`clip_grad_norm_` of each model separately (its own total norm, its own factor)."""
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads])  # [params, K]
        total = norms.norm(dim=0)
        factor = (max_norm / (total + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(factor.view(-1, *[1] * (g.ndim - 1)))

    def step(self, step: int, amp: bool = False) -> torch.Tensor:
        """One batched update producing step `step`: the K losses `[K]` (no host sync)."""
        cfg = self.cfg
        for group in self.optim.param_groups:
            group["lr"] = cfg.lr_at(step - 1)
        tokens, targets, mask = self._batches(step)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
            losses = self.losses(self.params, self.buffers, tokens, targets, mask)
        self.optim.zero_grad(set_to_none=True)
        losses.sum().backward()  # model k's parameters get model k's gradient only
        if cfg.grad_clip is not None:
            self._clip(cfg.grad_clip)
        self.optim.step()
        return losses

    def train(self) -> list[rundir.Run]:
        cfg, K, device = self.cfg, self.K, self.device
        schedule = set(cfg.checkpoints())
        amp = cfg.amp and device.type == "cuda"
        start = self.start
        tokens, _, _ = self._batches(start + 1)
        self.models[0].validate_tokens(tokens[0])
        tokens_per_step = cfg.batch_size * self.task.seq_len
        t0 = time.perf_counter() - (self.extras[0].get("elapsed_s", 0.0) if start else 0.0)
        window = torch.tensor(
            [e.get("window_loss", 0.0) for e in self.extras], device=device, dtype=torch.float32
        )
        window_n = int(self.extras[0].get("window_n", 0)) if start else 0
        unstacked_at = None

        def sync(step: int, with_optimizer: bool = False) -> None:
            nonlocal unstacked_at
            if unstacked_at != (step, with_optimizer) and unstacked_at != (step, True):
                self._unstack(with_optimizer)
                unstacked_at = (step, with_optimizer)

        def record(step: int, means: list[float] | None) -> None:
            nonlocal window_n
            sync(step)
            for k, (model, run, c) in enumerate(
                zip(self.models, self.runs, self.cfgs, strict=True)
            ):
                row = {
                    "step": step,
                    "tokens": step * tokens_per_step,
                    "lr": cfg.lr_at(max(step - 1, 0)),
                }
                row["train_loss"] = None if means is None else means[k]
                row.update(evaluate(model, self.task, c, device))
                row["elapsed_s"] = time.perf_counter() - t0
                run.log_metrics(row)
            window.zero_()
            window_n = 0

        def save(step: int) -> None:
            sync(step, with_optimizer=True)
            elapsed = time.perf_counter() - t0
            for k, (model, optim, run) in enumerate(
                zip(self.models, self.optims, self.runs, strict=True)
            ):
                state = {
                    "elapsed_s": elapsed,
                    "window_loss": window[k].item(),
                    "window_n": window_n,
                }
                run.save_checkpoint(model, optim, step, **state)

        for m in self.models:
            m.train()
        if start == 0 and not any(run.resuming for run in self.runs):  # resumed at 0: row exists
            record(0, None)
            if 0 in schedule:
                save(0)
        step = start
        bar = tqdm(
            total=cfg.steps,
            initial=start,
            disable=not cfg.progress,
            desc=f"train x{K}",
            unit="step",
        )
        with _StopRequest() as stop, contextlib.closing(bar):
            for step in range(start + 1, cfg.steps + 1):
                losses = self.step(step, amp)
                window += losses.detach().float()
                window_n += 1
                due_eval = step % cfg.eval_every == 0 or step in schedule
                if step % cfg.log_every == 0 or due_eval or stop.requested:
                    means = (window / window_n).tolist()  # one host sync for all K models
                    bad = [
                        s for s, v in zip(self.seeds, means, strict=True) if not math.isfinite(v)
                    ]
                    if bad:
                        raise TrainingDiverged(
                            f"loss became non-finite by step {step} for seed(s) {bad}; every run "
                            f"keeps its last good checkpoint. Lower lr (now {cfg.lr}) or set "
                            "grad_clip."
                        )
                    if due_eval:
                        record(step, means)
                bar.update(1)
                if step in schedule or stop.requested:
                    save(step)
                if stop.requested:
                    raise KeyboardInterrupt(
                        f"training interrupted at step {step}; checkpoints saved"
                    )
        sync(step)
        for model, run in zip(self.models, self.runs, strict=True):
            run.finish(model, step)
        return self.runs
