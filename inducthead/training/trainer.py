"""`train` and `train_many`: set up the run directories, devices, threads and processes, then hand
a stepper to the one loop (`inducthead.training.loop.fit`).

`train(model, task, config, out_dir)` trains one model: in this process, or data-parallel across
the processes torchrun started (`inducthead.training.distributed`). `train_many(model, task,
config, out_dir, seeds=...)` trains one model per seed as one batched computation
(`inducthead.training.vmapped`). Both take the same arguments in the same order, honour every
TrainConfig field and write the same run directories.

Speed: data is generated on the model's device, the loss is read back to the host only every
`log_every` steps, attention takes `scaled_dot_product_attention` unless a hook needs the
pattern, `amp` runs bf16 autocast on CUDA, `compile` runs the model through `torch.compile` with
hook guards on (hooks added or removed after compilation recompile instead of going stale), and
`cpu_threads` sets and pins the CPU threads.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inducthead.model import HookedTransformer, HookedTransformerConfig
from inducthead.presets import Preset
from inducthead.presets import get as get_preset
from inducthead.recipe import TrainConfig, resolve_device
from inducthead.runs import Run, RunWriter
from inducthead.tasks import Task
from inducthead.training import distributed
from inducthead.training.loop import fit
from inducthead.training.speed import cpu_threads
from inducthead.training.steppers import SingleStepper
from inducthead.training.vmapped import VmappedStepper


def train(
    model: HookedTransformer,
    task: Task,
    config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    hooks: list | None = None,
    allow_schedule_change: bool = False,
) -> Run:
    """Train `model` on `task`; with `out_dir`, write run.json, metrics.jsonl and checkpoints.

    resume=True continues from the newest intact checkpoint in `out_dir` (same model config and
    task required). A resume may raise `steps` when the learning rates of the steps already
    trained stay the same (a constant schedule), so that it ends exactly where a straight run
    would; otherwise it is refused unless `allow_schedule_change`. `hooks`: `(hook_name, fn)`
    forward hooks active during training (e.g. clamps). Ctrl-C stops at the next step, saves a
    checkpoint and re-raises KeyboardInterrupt. The model trains on `config.device` ("auto":
    CUDA when present) and stays there.
    """
    cfg = config or TrainConfig()
    if not isinstance(model, HookedTransformer):
        raise TypeError(
            f"train expects an inducthead.HookedTransformer, got {type(model).__name__}."
        )
    _check_task(task, "train")
    task.check_model(model.cfg)
    ddp = distributed.from_env(cfg.device)
    try:
        device = ddp.device if ddp else resolve_device(cfg.device)
        model.to(device)
        with cpu_threads(cfg.cpu_threads, device, ddp.local_rank if ddp else 0):
            if ddp is None:
                writer = RunWriter.create(
                    out_dir,
                    model,
                    task,
                    cfg,
                    resume=resume,
                    overwrite=overwrite,
                    allow_schedule_change=allow_schedule_change,
                )
                with writer.lock():
                    return fit(SingleStepper(model, task, cfg, device), [writer], hooks)[0]
            return _train_ddp(
                model,
                task,
                cfg,
                out_dir,
                device,
                hooks,
                ddp,
                resume,
                overwrite,
                allow_schedule_change,
            )
    finally:
        if ddp is not None:
            ddp.close()


def _train_ddp(model, task, cfg, out_dir, device, hooks, ddp, resume, overwrite, allow) -> Run:
    """Rank 0 owns the run directory; other ranks follow its setup (or its error)."""
    ddp.check_batch_size(cfg.batch_size)
    with contextlib.ExitStack() as stack:
        error, writer = None, None
        try:
            writer = RunWriter.create(
                out_dir if ddp.is_main else None,
                model,
                task,
                cfg,
                resume=resume and ddp.is_main,
                overwrite=overwrite and ddp.is_main,
                allow_schedule_change=allow,
            )
            if ddp.is_main:
                stack.enter_context(writer.lock())
        except Exception as e:  # tell the other ranks before raising
            error = e
        status = ddp.broadcast(None if error is None else f"{type(error).__name__}: {error}")
        if error is not None:
            raise error
        if status is not None:
            raise RuntimeError(f"rank 0 could not start the run: {status}")
        return fit(SingleStepper(model, task, cfg, device, ddp), [writer], hooks)[0]


def train_many(
    model: HookedTransformerConfig | Preset | str,
    task: Task | None = None,
    config: TrainConfig | None = None,
    out_dir: str | Path | Sequence[str | Path] | None = None,
    *,
    seeds: Sequence[int],
    resume: bool = False,
    overwrite: bool = False,
    hooks: list | None = None,
    allow_schedule_change: bool = False,
) -> list[Run]:
    """Train one model per seed (model init and data both seeded by it) as one batched
    computation; returns one `Run` per seed, in order.

    model: the architecture, a HookedTransformerConfig, a Preset or a preset name (whose task
    and recipe are the defaults for `task` and `config`). out_dir: a root (seed s goes to
    ROOT/seed_s), a list of one directory per seed, or None (in memory). resume=True continues
    the runs from their newest checkpoints; they must all stand at the same step (all new, or all
    interrupted together). hooks: forward hooks run on every model's activations inside
    `torch.func.vmap`, so they must be tensor operations (no `.item()` or data-dependent
    branches) and must not read one particular model's weights.

    The same, to float rounding, as `[train(HookedTransformer(model.replace(seed=s)), task,
    config.replace(seed=s), dir_s, hooks=hooks) for s in seeds]`.
    """
    model_cfg, task, cfg = _resolve(model, task, config)
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"train_many needs one or more distinct seeds, got {seeds}.")
    if distributed.launched_world_size() > 1:
        raise ValueError("train_many runs in one process; launch it without torchrun.")
    task.check_model(model_cfg)
    device = resolve_device(cfg.device)
    with cpu_threads(cfg.cpu_threads, device):
        configs = [cfg.replace(seed=s) for s in seeds]
        models = [HookedTransformer(model_cfg.replace(seed=s)).to(device) for s in seeds]
        writers = [
            RunWriter.create(
                d,
                m,
                task,
                c,
                resume=resume,
                overwrite=overwrite,
                allow_schedule_change=allow_schedule_change,
            )
            for d, m, c in zip(_run_dirs(out_dir, seeds), models, configs, strict=True)
        ]
        with contextlib.ExitStack() as stack:
            for writer in writers:
                stack.enter_context(writer.lock())
            return fit(VmappedStepper(models, task, configs, device), writers, hooks)


def _check_task(task: Any, who: str) -> None:
    if not isinstance(task, Task):
        raise TypeError(f"{who} expects a task from inducthead.tasks, got {type(task).__name__}.")


def _resolve(model, task, config) -> tuple[HookedTransformerConfig, Task, TrainConfig]:
    """(model config, task, train config) from a config, a Preset or a preset name."""
    if isinstance(model, str):
        model = get_preset(model)
    if isinstance(model, Preset):
        task = task if task is not None else model.make_task()
        config = config if config is not None else model.train
        model = model.model
    if not isinstance(model, HookedTransformerConfig):
        hint = " (pass model.cfg: every seed initialises its own weights)"
        raise TypeError(
            "train_many expects a HookedTransformerConfig, a Preset or a preset name, got "
            f"{type(model).__name__}{hint if isinstance(model, HookedTransformer) else ''}."
        )
    _check_task(task, "train_many")
    return model, task, config or TrainConfig()


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
