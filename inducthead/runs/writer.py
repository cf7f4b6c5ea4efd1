"""The write side of a run directory: `RunWriter`, which the training loop writes through.

It creates (or resumes, or overwrites) the directory, holds its lock, appends metrics rows,
writes checkpoints atomically, restores the newest intact checkpoint for a resume and marks the
run finished. Every path below the directory is built with `paths.safe_child`, so no name (and no
symbolic link planted in the directory) makes it write outside. The lock is an OS file lock
(`flock`) on `.lock` plus the owner's PID@host (`inducthead.runs.lock`).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import platform
import re
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from inducthead._version import __version__
from inducthead.recipe import TrainConfig
from inducthead.runs import checkpoint as ckpt
from inducthead.runs import files
from inducthead.runs.lock import LockError, acquire_lock, release_lock
from inducthead.runs.paths import safe_child
from inducthead.runs.run import (
    LOCK,
    METRICS,
    RUN_FORMAT,
    RUN_JSON,
    Run,
    RunDirError,
    checkpoint_steps,
    read_metrics,
)

# TrainConfig fields a resume may change: none changes the updates, except `steps`, which
# `_schedule_change` allows only where the learning rates of the steps already trained stay the
# same (or when asked to).
_RESUMABLE_TRAIN_CHANGES = {"steps", "progress", "device", "log_every", "compile", "cpu_threads"}
# Differences a refused resume names (the rest are counted).
_SHOWN_DIFFS = 5
# Final names whose leftover temporary files (from a killed writer) a new owner may delete.
_OWN_FILES = re.compile(r"step_\d+\.safetensors|run\.json|metrics\.jsonl")


def versions() -> dict[str, str]:
    """Versions of inducthead, torch, Python, TransformerLens and the git checkout (if any)."""
    from importlib.metadata import version

    out = {"inducthead": __version__, "torch": torch.__version__}
    out["python"] = platform.python_version()
    with contextlib.suppress(Exception):
        out["transformer_lens"] = version("transformer-lens")
    with contextlib.suppress(Exception):
        here = Path(__file__).resolve().parent
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
        if described.returncode == 0:
            out["git"] = described.stdout.strip()
    return out


def _only_leftovers(path: Path) -> bool:
    """True if `path` holds nothing but what a run killed before writing run.json leaves: a lock
    file, an empty checkpoints/ and temporary files."""
    for entry in path.iterdir():
        if entry.name == LOCK or files.TEMP_NAME.match(entry.name):
            continue
        if (
            entry.name == ckpt.CHECKPOINT_DIR
            and entry.is_dir()
            and not entry.is_symlink()
            and all(files.TEMP_NAME.match(e.name) for e in entry.iterdir())
        ):
            continue
        return False
    return True


class RunWriter:
    """Writes one run: to `path`, or nowhere (`path=None`: rows and model kept in memory).

    >>> writer = RunWriter.create(out_dir, model, task, train_config, resume=True)
    >>> with writer.lock():
    ...     step, state = writer.restore(model, optimizer) if writer.resuming else (0, {})
    ...     writer.log_metrics(row); writer.save_checkpoint(model, optimizer, step)
    ...     run = writer.finish(model, step)        # the `Run` users read
    """

    def __init__(self, path: Path | None, meta: dict[str, Any], resuming: bool, overwrite: bool):
        self.path, self.meta, self.resuming, self._overwrite = path, meta, resuming, overwrite
        self._rows: list[dict[str, Any]] = []  # in memory only

    @classmethod
    def create(
        cls,
        out_dir,
        model,
        task,
        train_cfg,
        *,
        resume=False,
        overwrite=False,
        allow_schedule_change=False,
    ):
        """Check that `out_dir` can take this run (new, empty, resumable with the same setup, or
        overwrite=True); nothing is written before `lock()`. A resume with another `steps` is
        refused when it changes the learning rate of a step already trained, unless
        `allow_schedule_change` (the change is then recorded in run.json)."""
        meta = {
            "format": RUN_FORMAT,
            "model": model.cfg.to_dict(),
            "task": task.to_dict(),
            "train": train_cfg.to_dict(),
            "seed": train_cfg.seed,
            "versions": versions(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "status": "running",
        }
        if hasattr(task, "describe"):
            meta["task_info"] = task.describe()
        if out_dir is None:
            return cls(None, meta, False, overwrite)
        path = Path(out_dir)
        existing = path / RUN_JSON
        resuming = False
        if existing.is_file() and resume and not overwrite:
            old = json.loads(existing.read_text())
            _check_same_run(old, meta)
            meta["created"] = old.get("created", meta["created"])
            steps = checkpoint_steps(path)
            resuming = bool(steps)
            if steps:
                change = _schedule_change(old, train_cfg, steps[-1], allow_schedule_change)
                meta["schedule_changes"] = old.get("schedule_changes", []) + change
        elif existing.is_file() and not overwrite:
            raise RunDirError(
                f"{path} already holds a run; pass resume=True (CLI --resume) to continue it "
                "or overwrite=True (CLI --overwrite) to replace it."
            )
        elif path.is_dir() and not existing.is_file() and not _only_leftovers(path):
            raise RunDirError(
                f"{path} exists, is not empty and is not a run directory; choose a new or "
                "empty directory (nothing in it was touched)."
            )
        return cls(path, meta, resuming, overwrite)

    @contextlib.contextmanager
    def lock(self) -> Iterator[RunWriter]:
        """Hold the directory's lock file for the duration (no-op in memory); taking it writes
        run.json and clears what an overwrite replaces."""
        if self.path is None:
            yield self
            return
        self.path.mkdir(parents=True, exist_ok=True)
        lock = self._child(LOCK)
        try:
            fd = acquire_lock(lock, self.path)
        except LockError as e:
            raise RunDirError(str(e)) from None
        try:
            self._prepare()
            yield self
        finally:
            release_lock(lock, fd)

    def _child(self, *names: str) -> Path:
        return safe_child(self.path, *names, what="run directory entry")

    def _prepare(self) -> None:
        checkpoints = self._child(ckpt.CHECKPOINT_DIR)
        if self._overwrite:
            for old in checkpoints.glob("step_*.safetensors"):
                self._child(ckpt.CHECKPOINT_DIR, old.name).unlink()
            self._child(METRICS).unlink(missing_ok=True)
        checkpoints.mkdir(parents=True, exist_ok=True)
        for folder in (self.path, checkpoints):  # temporary files of killed writers
            files.remove_stale_temp_files(folder, _OWN_FILES)
        self._write_meta()
        if not self.resuming:
            self._child(METRICS).unlink(missing_ok=True)

    def _write_meta(self) -> None:
        files.atomic_write_text(self._child(RUN_JSON), json.dumps(self.meta, indent=2))

    def checkpoint_path(self, step: int) -> Path:
        return self._child(ckpt.CHECKPOINT_DIR, ckpt.checkpoint_name(int(step)))

    # ------------------------------------------------------------------ used by the loop
    def restore(self, model, optimizer) -> tuple[int, dict[str, Any]]:
        """Load the newest intact checkpoint into model/optimizer/RNG and drop later metrics;
        returns its step and the trainer state saved with it."""
        for step in reversed(checkpoint_steps(self.path)):
            path = self.checkpoint_path(step)
            try:
                tensors, meta = ckpt.read_checkpoint(path)
            except ckpt.CheckpointError as e:
                warnings.warn(f"skipping damaged checkpoint: {e}", stacklevel=2)
                continue
            if "optim_param_groups" not in meta:
                raise RunDirError(
                    f"{path} holds weights only (no optimizer state): it can be "
                    "loaded and analysed but not resumed."
                )
            load_training_state(tensors, meta, model, optimizer)
            rows = [r for r in read_metrics(self.path / METRICS) if r["step"] <= step]
            lines = "".join(json.dumps(r) + "\n" for r in rows)
            files.atomic_write_text(self._child(METRICS), lines)
            return step, json.loads(meta.get("extra", "{}"))
        raise RunDirError(f"{self.path}: no intact checkpoint to resume from.")

    def log_metrics(self, row: dict[str, Any]) -> None:
        if self.path is None:
            self._rows.append(row)
            return
        with open(self._child(METRICS), "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()

    def save_checkpoint(self, model, optimizer, step: int, **trainer_state: Any) -> None:
        if self.path is not None:
            path = self.checkpoint_path(step)
            ckpt.write_checkpoint(path, model, optimizer, step, extra=trainer_state)

    def finish(self, model, step: int) -> Run:
        """Mark the run finished at `step`; returns the `Run`, holding the trained `model`."""
        self.meta.update(status="finished", final_step=step)
        if self.path is None:
            return Run.in_memory(self.meta, self._rows, model)
        self._write_meta()
        run = Run(self.path)
        run.model = model
        return run

    def interrupted(self) -> None:
        """Mark the run interrupted (Ctrl-C), with the step of its newest checkpoint."""
        steps = checkpoint_steps(self.path) if self.path is not None else []
        self.meta.update(status="interrupted", saved_step=steps[-1] if steps else None)
        if self.path is not None:
            self._write_meta()

    def describe_last_checkpoint(self) -> str:
        steps = checkpoint_steps(self.path) if self.path is not None else []
        return f"step {steps[-1]}" if steps else "none written"


def load_training_state(tensors, meta, model, optimizer) -> None:
    """Model weights, optimizer state and RNG state from a read checkpoint."""
    model.load_state_dict(ckpt.model_state(tensors))
    ckpt.restore_optimizer(optimizer, tensors, meta)
    ckpt.restore_rng(tensors)


def _schedule_change(old: dict, new: TrainConfig, trained: int, allowed: bool) -> list[dict]:
    """[] when resuming at step `trained` with `new` trains exactly what a straight run with `new`
    would; else RunDirError, or (when `allowed`) the record of the change."""
    before = TrainConfig.from_dict(old["train"])
    if before.steps == new.steps:
        return []
    if new.steps < trained:
        raise RunDirError(
            f"cannot resume with steps={new.steps}: this run already trained {trained} steps."
        )
    changed = next((s for s in range(trained) if before.lr_at(s) != new.lr_at(s)), None)
    if changed is None:  # e.g. a constant schedule: the extension equals a straight run
        return []
    record = [{"at_step": trained, "steps": [before.steps, new.steps]}]
    if allowed:
        return record
    raise RunDirError(
        f"cannot resume with steps {before.steps} -> {new.steps}: with schedule="
        f"{before.schedule!r} and warmup_steps={before.warmup_steps} the learning rate depends "
        f"on `steps`, so the {trained} steps already trained used other rates than a straight "
        f"{new.steps}-step run would (update {changed + 1}: {before.lr_at(changed):.3g} vs "
        f"{new.lr_at(changed):.3g}); the result would match neither run. Keep steps="
        f"{before.steps}, or pass allow_schedule_change=True (CLI --allow-schedule-change) to "
        "continue anyway (run.json records the change)."
    )


def _check_same_run(old: dict, new: dict) -> None:
    new = json.loads(json.dumps(new))  # compare as stored (tuples become lists)
    diffs = []
    for section in ("model", "task"):
        if old.get(section) != new[section]:
            keys = set(old.get(section, {})) | set(new[section])
            diffs += [
                f"{section}.{k}: {old.get(section, {}).get(k)!r} -> {new[section].get(k)!r}"
                for k in sorted(keys)
                if old.get(section, {}).get(k) != new[section].get(k)
            ]
    for k, v in new["train"].items():
        if k not in _RESUMABLE_TRAIN_CHANGES and old.get("train", {}).get(k) != v:
            diffs.append(f"train.{k}: {old.get('train', {}).get(k)!r} -> {v!r}")
    before = old.get("task_info", {}).get("fingerprint")
    after = new.get("task_info", {}).get("fingerprint")
    if before != after:  # the files behind the task (e.g. a corpus) changed
        diffs.append(f"task data fingerprint: {before} -> {after}")
    if diffs:
        names = (old.get("model", {}).get("model_name"), new["model"].get("model_name"))
        what = f"model {names[0]!r}, not {names[1]!r}; " if names[0] != names[1] else ""
        shown = "; ".join(diffs[:_SHOWN_DIFFS])
        more = f"; and {len(diffs) - _SHOWN_DIFFS} more" if len(diffs) > _SHOWN_DIFFS else ""
        raise RunDirError(
            f"cannot resume: this run was started with a different setup ({what}{shown}{more}). "
            "Use the original settings, or overwrite=True / --overwrite to start again."
        )
