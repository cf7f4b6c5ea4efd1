"""The read side of a run directory: `Run` (configs, metrics, checkpoints) and `load`.

```
run/
  run.json              model, task and train configs, seed, versions, status
  metrics.jsonl         one JSON line per evaluation
  checkpoints/step_00000128.safetensors
  .lock                 PID@host of the process training into this directory
```

The trainer writes it through `inducthead.runs.writer.RunWriter`; everything here only reads.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path
from typing import Any

import torch

from inducthead.model import HookedTransformer, HookedTransformerConfig
from inducthead.recipe import TrainConfig
from inducthead.runs import checkpoint as ckpt
from inducthead.runs.paths import safe_child
from inducthead.runs.pickled import load_pickle
from inducthead.tasks import Task
from inducthead.tasks import from_dict as task_from_dict

RUN_FORMAT = "inducthead-run/1"
RUN_JSON, METRICS, LOCK = "run.json", "metrics.jsonl", ".lock"
# Columns of the metrics table shown in Jupyter.
_HTML_COLUMNS = (
    "step",
    "tokens",
    "train_loss",
    "eval_loss",
    "best_prefix_matching",
    "best_previous_token",
    "elapsed_s",
)


class RunDirError(ValueError):
    """A run directory cannot be used as asked (exists, differs, is locked, ...)."""


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl file (none if it is missing); a line cut by a kill is dropped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            rows.append(json.loads(line))
    return rows


class Run:
    """A training run: its configs, metrics and checkpoints (on disk, or in memory if trained
    with `out_dir=None`).

    >>> run = inducthead.Run("runs/demo")
    >>> run.checkpoints            # steps with a checkpoint file
    >>> run.metrics                # pandas DataFrame, one row per evaluation
    >>> model = run.load(step=200)

    metrics.jsonl is parsed once and re-read only when the file changes (a run still training).
    """

    def __init__(self, path: str | Path):
        self.path: Path | None = Path(path)
        meta_path = self.path / RUN_JSON
        if not meta_path.is_file():
            raise RunDirError(f"{self.path} is not an inducthead run directory (no {RUN_JSON}).")
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as e:
            raise RunDirError(f"{meta_path} is not valid JSON ({e}).") from None
        self._init(meta, rows=None, model=None)

    @classmethod
    def in_memory(cls, meta: dict[str, Any], rows: list[dict[str, Any]], model) -> Run:
        """A run trained with `out_dir=None`: its metrics rows and final model, no directory."""
        run = cls.__new__(cls)
        run.path = None
        run._init(meta, rows=list(rows), model=model)
        return run

    def _init(self, meta: dict[str, Any], rows, model) -> None:
        self.meta = meta
        self.config = HookedTransformerConfig.from_dict(meta["model"])
        self.model: torch.nn.Module | None = model  # the trained model, when `train` returned us
        self._rows = rows
        self._rows_stamp: tuple[int, int] | None = None

    # ------------------------------------------------------------------ configs
    @property
    def task(self) -> Task:
        return task_from_dict(self.meta["task"])

    @property
    def train_config(self) -> TrainConfig:
        return TrainConfig.from_dict(self.meta["train"])

    @property
    def status(self) -> str:
        return self.meta.get("status", "?")

    # ------------------------------------------------------------------ metrics
    def rows(self) -> list[dict[str, Any]]:
        """The metrics rows, parsed once (and again only after the file changed)."""
        if self.path is None:
            return list(self._rows)
        path = self.path / METRICS
        try:
            st = path.stat()
            stamp = (st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            stamp = None
        if self._rows is None or stamp != self._rows_stamp:
            self._rows = read_metrics(path)
            self._rows_stamp = stamp
        return list(self._rows)

    @property
    def metrics(self):
        """One row per evaluation (pandas DataFrame)."""
        import pandas as pd

        return pd.DataFrame(self.rows())

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoints(self) -> list[int]:
        """Steps that have a checkpoint file (see `damaged` for files that fail to load)."""
        if self.path is None:
            return []
        return checkpoint_steps(self.path)

    def checkpoint_path(self, step: int) -> Path:
        if self.path is None:
            raise RunDirError("this run was trained in memory (out_dir=None): no checkpoints.")
        return safe_child(
            self.path,
            ckpt.CHECKPOINT_DIR,
            ckpt.checkpoint_name(int(step)),
            what="run directory entry",
        )

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

    def load(self, step: int | None = None, device: str | None = None):
        """The model at checkpoint `step` (default: the newest intact one)."""
        if self.path is None:
            if step is not None:
                raise RunDirError("this run was trained in memory (out_dir=None): no checkpoints.")
            return self.model
        steps = self.checkpoints
        if step is None:
            for s in reversed(steps):
                try:
                    return load_checkpoint(self.checkpoint_path(s), device)
                except ckpt.CheckpointError as e:  # say so: the next one is an older model
                    warnings.warn(f"skipping damaged checkpoint: {e}", stacklevel=2)
            raise RunDirError(f"{self.path} has no intact checkpoint.")
        if step not in steps:
            raise RunDirError(f"{self.path} has no checkpoint at step {step}; available: {steps}.")
        return load_checkpoint(self.checkpoint_path(step), device)

    def output_path(self, *names: str) -> Path:
        """A path inside this run directory for an output (report, figure, sweep cell), creating
        its parent folders. Names must be plain file names: `..`, absolute paths, separators
        and symbolic links leading outside the run directory are refused (ValueError)."""
        if self.path is None:
            raise RunDirError("this run was trained in memory (out_dir=None): it has no directory.")
        path = safe_child(self.path, *names, what="output name")
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    # ------------------------------------------------------------------ display
    def plot(self, **kwargs):
        """Training curves from metrics.jsonl against step (log-like axis, step 0 kept): train
        and eval loss; the ICL score when recorded; the best prefix-matching and previous-token
        head scores (0 to 1) when recorded. Keywords go to `plotstyle.panel_grid` (dpi, ...).
        The figure is not registered with pyplot: Jupyter shows it once; save it with
        `fig.savefig(path)`."""
        from inducthead import plotstyle

        rows = self.rows()
        if not rows:
            raise RunDirError(f"{self._where()} has no metrics rows yet: nothing to plot.")
        panels = [p for p in _CURVES if any(_series(rows, k)[0] for k, _ in p[2])]
        fig, axes = plotstyle.panel_grid(len(panels), panel_size=(4.6, 3.2), **kwargs)
        for ax, (title, ylabel, keys) in zip(axes, panels, strict=True):
            for key, label in keys:
                steps, values = _series(rows, key)
                if steps:
                    ax.plot(steps, values, marker=".", ms=4, label=label)
            plotstyle.step_axis(ax, [r["step"] for r in rows if "step" in r])
            if ylabel == "score":
                ax.set_ylim(-0.03, 1.03)
            ax.set_title(title, fontsize=10)
            ax.set_ylabel(ylabel)
            plotstyle.legend(ax)
        return plotstyle.finish(fig, f"{self._where()}: training curves")

    def _where(self) -> str:
        return str(self.path) if self.path is not None else "run in memory"

    def __repr__(self) -> str:
        where = str(self.path) if self.path is not None else "in memory"
        c = self.config
        rows = self.rows()
        last = rows[-1] if rows else {}
        loss = f", eval_loss {last['eval_loss']:.3f}" if "eval_loss" in last else ""
        pm = last.get("best_prefix_matching")
        pm_text = f", best prefix-matching {pm:.2f}" if pm is not None else ""
        step = last.get("step", 0)
        if self.status == "interrupted":  # the state to resume from, not the last evaluation
            step = self.meta.get("saved_step", step)
        return (
            f"Run({where}: {c.n_layers}L x {c.n_heads}H, task {self.meta['task']['name']}, "
            f"{self.status}, step {step}{loss}{pm_text}, {len(self.checkpoints)} checkpoints)"
        )

    def _repr_html_(self) -> str:
        df = self.metrics
        cols = [k for k in _HTML_COLUMNS if k in df]
        table = df[cols].tail(10).to_html(index=False, float_format="%.4g") if len(df) else ""
        return f"<p><code>{self!r}</code></p>{table}"


# Run.plot's panels: (title, y label, [(metrics.jsonl key, legend label)]); a panel is drawn
# when any of its keys is recorded.
_CURVES = (
    ("Loss", "loss (nats)", [("train_loss", "train loss"), ("eval_loss", "eval loss")]),
    ("ICL score", "ICL score (nats)", [("icl_score", "ICL score")]),
    (
        "Best head scores",
        "score",
        [
            ("best_prefix_matching", "best prefix matching"),
            ("best_previous_token", "best previous token"),
        ],
    ),
)


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list, list]:
    """The steps and values of `key` over the rows that record it (not null)."""
    pairs = [(r["step"], r[key]) for r in rows if r.get(key) is not None and "step" in r]
    return [s for s, _ in pairs], [v for _, v in pairs]


def checkpoint_steps(path: Path) -> list[int]:
    """Steps of the checkpoint files in run directory `path`, sorted."""
    files = (path / ckpt.CHECKPOINT_DIR).glob("step_*.safetensors")
    return sorted(int(f.stem.split("_")[1]) for f in files if f.stem.split("_")[1].isdigit())


def load_checkpoint(path: str | Path, device: str | None = None) -> HookedTransformer:
    """A `HookedTransformer` from one checkpoint file (its metadata holds the config)."""
    tensors, meta = ckpt.read_checkpoint(path)
    model = model_from_state(meta["config"], ckpt.model_state(tensors), path, int(meta["step"]))
    return model.to(device) if device else model


def model_from_state(
    config_json: str, state: dict, path: str | Path, step: int
) -> HookedTransformer:
    """Our `HookedTransformer` from a config and its model tensors, in eval mode, recording the
    file and step it came from (`loaded_from`: results that analyse it report it as their
    source)."""
    model = HookedTransformer(HookedTransformerConfig.from_json(config_json), init=False)
    model.load_state_dict(state)  # weights come from the file: no init above
    model.eval()
    model.loaded_from = {"path": str(path), "step": int(step)}
    return model


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
