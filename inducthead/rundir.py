"""Run directories: run.json + metrics.jsonl + checkpoints/, the `Run` object and `load`.

```
run/
  run.json              model, task and train configs, seed, versions, status
  metrics.jsonl         one JSON line per evaluation
  checkpoints/step_00000128.safetensors
  .lock                 PID@host of the process training into this directory
```

Every path below a run directory is built with `paths.safe_child`, so no name (and no symbolic
link planted in the directory) makes inducthead write outside it. The lock is an OS file lock
(`flock`) on `.lock` plus the owner's PID@host written in it: a second process is refused while
the owner lives, and the kernel releases the lock when the owner dies (even by kill -9), so a
stale lock is taken over without races. On filesystems without `flock` the PID alone decides.
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

from inducthead import checkpoint as ckpt
from inducthead.config import HookedTransformerConfig
from inducthead.paths import safe_child
from inducthead.runlock import LockError, acquire_lock, release_lock

RUN_FORMAT = "inducthead-run/1"
RUN_JSON, METRICS, LOCK = "run.json", "metrics.jsonl", ".lock"
# Fields a resumed run may change without changing what is being trained.
_RESUMABLE_TRAIN_CHANGES = {"steps", "progress", "device", "log_every", "compile", "cpu_threads"}
# Final names whose leftover temporary files (from a killed writer) a new owner may delete.
_OWN_FILES = re.compile(r"step_\d+\.safetensors|run\.json|metrics\.jsonl")


class RunDirError(ValueError):
    """A run directory cannot be used as asked (exists, differs, is locked, ...)."""


def versions() -> dict[str, str]:
    from importlib.metadata import version

    import transformer_lens  # noqa: F401  (version lookup below)

    import inducthead

    out = {"inducthead": inducthead.__version__, "torch": torch.__version__}
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
        if entry.name == LOCK or ckpt.TEMP_NAME.match(entry.name):
            continue
        if (
            entry.name == ckpt.CHECKPOINT_DIR
            and entry.is_dir()
            and not entry.is_symlink()
            and all(ckpt.TEMP_NAME.match(e.name) for e in entry.iterdir())
        ):
            continue
        return False
    return True


class Run:
    """A training run: its configs, metrics and checkpoints (on disk, or in memory if no path).

    >>> run = inducthead.Run("runs/demo")
    >>> run.checkpoints            # steps with an intact checkpoint
    >>> run.metrics                # pandas DataFrame, one row per evaluation
    >>> model = run.load(step=200)
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        meta_path = self.path / RUN_JSON
        if not meta_path.is_file():
            raise RunDirError(f"{self.path} is not an inducthead run directory (no {RUN_JSON}).")
        try:
            self.meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as e:
            raise RunDirError(f"{meta_path} is not valid JSON ({e}).") from None
        self.config = HookedTransformerConfig.from_dict(self.meta["model"])
        self.model: torch.nn.Module | None = None
        self._rows: list[dict[str, Any]] | None = None
        self.resuming = False

    # ------------------------------------------------------------------ construction for train()
    @classmethod
    def create(cls, out_dir, model, task, train_cfg, *, resume=False, overwrite=False) -> Run:
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
        run = cls.__new__(cls)
        run.meta, run.config, run.model, run._rows = meta, model.cfg, None, []
        run.path, run.resuming, run._overwrite = None, False, overwrite
        if out_dir is None:
            return run
        run.path = Path(out_dir)
        existing = run.path / RUN_JSON
        if existing.is_file() and resume and not overwrite:
            old = json.loads(existing.read_text())
            _check_same_run(old, meta)
            meta["created"] = old.get("created", meta["created"])
            run.resuming = bool(Run(run.path).checkpoints)
        elif existing.is_file() and not overwrite:
            raise RunDirError(
                f"{run.path} already holds a run; pass resume=True (CLI --resume) to continue it "
                "or overwrite=True (CLI --overwrite) to replace it."
            )
        elif run.path.is_dir() and not existing.is_file() and not _only_leftovers(run.path):
            raise RunDirError(
                f"{run.path} exists, is not empty and is not a run directory; choose a new or "
                "empty directory (nothing in it was touched)."
            )
        return run

    @contextlib.contextmanager
    def lock(self) -> Iterator[Run]:
        """Hold the directory's lock file for the duration (no-op in memory)."""
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

    def output_path(self, *names: str) -> Path:
        """A path inside this run directory for an output (report, figure, sweep cell), creating
        its parent folders. Names must be plain file names: `..`, absolute paths, separators
        and symbolic links leading outside the run directory are refused (ValueError)."""
        if self.path is None:
            raise RunDirError("this run was trained in memory (out_dir=None): it has no directory.")
        path = safe_child(self.path, *names, what="output name")
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _prepare(self) -> None:
        checkpoints = self._child(ckpt.CHECKPOINT_DIR)
        if getattr(self, "_overwrite", False):
            for old in checkpoints.glob("step_*.safetensors"):
                self._child(ckpt.CHECKPOINT_DIR, old.name).unlink()
            self._child(METRICS).unlink(missing_ok=True)
        checkpoints.mkdir(parents=True, exist_ok=True)
        for folder in (self.path, checkpoints):  # temporary files of killed writers
            ckpt.remove_stale_temp_files(folder, _OWN_FILES)
        ckpt.atomic_write_text(self._child(RUN_JSON), json.dumps(self.meta, indent=2))
        if not self.resuming:
            self._child(METRICS).unlink(missing_ok=True)

    # ------------------------------------------------------------------ used by the trainer
    def restore(self, model, optimizer) -> tuple[int, dict[str, Any]]:
        """Load the newest intact checkpoint into model/optimizer/RNG and drop later metrics;
        returns its step and the trainer state saved with it."""
        for step in reversed(self.checkpoints):
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
            model.load_state_dict(ckpt.model_state(tensors))
            ckpt.restore_optimizer(optimizer, tensors, meta)
            ckpt.restore_rng(tensors)
            rows = [r for r in self._read_metrics() if r["step"] <= step]
            lines = "".join(json.dumps(r) + "\n" for r in rows)
            ckpt.atomic_write_text(self._child(METRICS), lines)
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

    def finish(self, model, step: int) -> None:
        self.model = model
        self.meta.update(status="finished", final_step=step)
        if self.path is not None:
            ckpt.atomic_write_text(self._child(RUN_JSON), json.dumps(self.meta, indent=2))

    def describe_last_checkpoint(self) -> str:
        steps = self.checkpoints if self.path is not None else []
        return f"step {steps[-1]}" if steps else "none written"

    # ------------------------------------------------------------------ user API
    @property
    def checkpoints(self) -> list[int]:
        """Steps that have a checkpoint file (see `damaged` for files that fail to load)."""
        if self.path is None:
            return []
        files = (self.path / ckpt.CHECKPOINT_DIR).glob("step_*.safetensors")
        return sorted(int(f.stem.split("_")[1]) for f in files if f.stem.split("_")[1].isdigit())

    def checkpoint_path(self, step: int) -> Path:
        return self._child(ckpt.CHECKPOINT_DIR, ckpt.checkpoint_name(int(step)))

    @property
    def damaged(self) -> list[tuple[int, str]]:
        """`(step, reason)` for every checkpoint that fails to load or verify."""
        bad = []
        for step in self.checkpoints:
            try:
                ckpt.read_checkpoint(self.checkpoint_path(step))
            except ckpt.CheckpointError as e:
                bad.append((step, str(e)))
        return bad

    def _read_metrics(self) -> list[dict[str, Any]]:
        if self.path is None:
            return list(self._rows)
        path = self.path / METRICS
        if not path.is_file():
            return []
        rows = []
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # a line cut by a kill is dropped
                rows.append(json.loads(line))
        return rows

    @property
    def metrics(self):
        """One row per evaluation (pandas DataFrame)."""
        import pandas as pd

        return pd.DataFrame(self._read_metrics())

    @property
    def task(self):
        from inducthead.tasks import from_dict

        return from_dict(self.meta["task"])

    @property
    def train_config(self):
        from inducthead.train_config import TrainConfig

        return TrainConfig.from_dict(self.meta["train"])

    def load(self, step: int | None = None, device: str | None = None):
        """The model at checkpoint `step` (default: the newest intact one)."""
        if self.path is None:
            if step is not None:
                raise RunDirError("this run was trained in memory (out_dir=None): no checkpoints.")
            return self.model
        steps = self.checkpoints
        if step is None:
            for s in reversed(steps):
                with contextlib.suppress(ckpt.CheckpointError):
                    return load_checkpoint(self.checkpoint_path(s), device)
            raise RunDirError(f"{self.path} has no intact checkpoint.")
        if step not in steps:
            raise RunDirError(f"{self.path} has no checkpoint at step {step}; available: {steps}.")
        return load_checkpoint(self.checkpoint_path(step), device)

    def __repr__(self) -> str:
        where = str(self.path) if self.path is not None else "in memory"
        c, status = self.config, self.meta.get("status", "?")
        n = len(self.checkpoints) if self.path is not None else 0
        rows = self._read_metrics()
        last = rows[-1] if rows else {}
        loss = f", eval_loss {last['eval_loss']:.3f}" if "eval_loss" in last else ""
        pm = last.get("best_prefix_matching")
        pm_text = f", best prefix-matching {pm:.2f}" if pm is not None else ""
        return (
            f"Run({where}: {c.n_layers}L x {c.n_heads}H, task {self.meta['task']['name']}, "
            f"{status}, "
            f"step {last.get('step', 0)}{loss}{pm_text}, {n} checkpoints)"
        )

    def _repr_html_(self) -> str:
        df = self.metrics
        cols = [
            k
            for k in (
                "step",
                "tokens",
                "train_loss",
                "eval_loss",
                "best_prefix_matching",
                "best_previous_token",
                "elapsed_s",
            )
            if k in df
        ]
        table = df[cols].tail(10).to_html(index=False, float_format="%.4g") if len(df) else ""
        return f"<p><code>{self!r}</code></p>{table}"


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
    if diffs:
        raise RunDirError(
            "cannot resume: this run was started with a different setup ("
            + "; ".join(diffs)
            + "). Use the original settings, or overwrite=True / --overwrite to start again."
        )


def load_checkpoint(path: str | Path, device: str | None = None):
    """A `HookedTransformer` from one checkpoint file (its metadata holds the config)."""
    from inducthead.model import HookedTransformer

    tensors, meta = ckpt.read_checkpoint(path)
    cfg = HookedTransformerConfig.from_json(meta["config"])
    model = HookedTransformer(cfg, init=False)  # weights come from the file
    model.load_state_dict(ckpt.model_state(tensors))
    model.eval()
    return model.to(device) if device else model


def load(
    path: str | Path,
    step: int | None = None,
    device: str | None = None,
    *,
    allow_pickle: bool = False,
    config=None,
):
    """Load a model from a run directory (newest intact checkpoint, or `step`) or a checkpoint
    file. Only safetensors files are read unless `allow_pickle=True` is given for a pickle-based
    `.pt`/`.pth` file (e.g. a TransformerLens 3 state dict), which is then read with
    `torch.load(weights_only=True)` by `inducthead.load_pickle` (`config` gives its architecture).
    """
    path = Path(path)
    if path.is_dir():
        if allow_pickle or config is not None:
            raise ValueError(
                f"allow_pickle= and config= apply to single pickle-based files; {path} is a run "
                "directory, whose checkpoints are safetensors."
            )
        return Run(path).load(step, device)
    if step is not None:
        raise ValueError(f"step= applies to run directories; {path} is a single checkpoint file.")
    if allow_pickle and _is_pickle_file(path):
        from inducthead.pickled import load_pickle

        return load_pickle(path, config, allow_pickle=True, device=device)
    if config is not None:
        raise ValueError(
            "config= applies only to pickle-based files loaded with allow_pickle=True; "
            f"{path} is read as a safetensors checkpoint, which records its own config."
        )
    return load_checkpoint(path, device)


def _is_pickle_file(path: Path) -> bool:
    if path.suffix.lower() in ckpt.PICKLE_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return False
    return ckpt.looks_like_pickle(head) and path.suffix.lower() != ".safetensors"
