"""Sweeps: a grid over presets, seeds and parameters; every cell a run directory; one table.

    inducthead sweep SPEC.json|yaml [--out DIR] [--backend local|ray] [--address ADDR]

A spec (JSON; YAML too when PyYAML is installed, e.g. with `pip install 'inducthead[ray]'`):

    {
      "name": "context-length",
      "out": "runs/context-length",        # the sweep directory (--out overrides)
      "presets": ["demo"],
      "seeds": [0, 1, 2],
      "set": {"train.steps": 600, "train.eval_every": 10},        # every cell
      "grid": {                                                   # the cartesian product
        "train.lr": [0.01, 0.003],
        "N": [{"label": 64, "task.seq_len": 64, "model.n_ctx": 64},   # a named axis moves
              {"label": 128, "task.seq_len": 128, "model.n_ctx": 128}]  # several fields together
      },
      "retries": 1,                        # extra attempts for a failed cell (default 1)
      "threshold": 0.5                     # emergence threshold (default 0.5)
    }

Parameters are `model.FIELD` (HookedTransformerConfig), `task.FIELD` (the preset's task) or
`train.FIELD` (TrainConfig); seeds come from `seeds` (they seed model init and data). Each cell
trains into `OUT/<cell name>` (a name made from the preset, the grid values and the seed,
checked to stay inside OUT), so a sweep can be stopped and rerun: finished cells are never
rerun, interrupted ones resume from their newest checkpoint, and failed ones are retried
`retries` times (each retry resumes too) and then reported. The results table (one row per cell:
status, attempts, final losses and scores, emergence step = the first evaluated step where the
best prefix-matching and best previous-token scores both reach the threshold) is printed and
written to OUT/results.csv and OUT/results.md.

Backends: `local` runs the cells one after another in this process. `ray` runs each cell as a
Ray task (1 CPU each by default; `--gpus-per-cell` for GPUs): on a local Ray cluster started for
the sweep, or on an existing cluster with `--address` (every node needs inducthead installed and
OUT on a shared filesystem). Install with `pip install 'inducthead[ray]'`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from inducthead.paths import safe_child, sanitize_name  # names never leave the sweep dir

SECTIONS = ("model", "task", "train")
COLUMNS = (
    "cell",
    "status",
    "attempts",
    "final_step",
    "train_loss",
    "eval_loss",
    "best_prefix_matching",
    "best_previous_token",
    "emergence_step",
    "seconds",
    "error",
)


class SweepError(ValueError):
    """The sweep spec is invalid or its directory cannot be used."""


# ---------------------------------------------------------------------------------- the spec
def read_spec(path: str | Path) -> dict[str, Any]:
    """A spec from a .json file, or a .yaml/.yml file (needs PyYAML)."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"sweep spec {path} does not exist.")
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise SweepError(
                f"{path} is YAML, which needs PyYAML: pip install 'inducthead[ray]' (or pyyaml), "
                "or write the spec as JSON."
            ) from None
        try:
            spec = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise SweepError(f"{path} is not valid YAML ({e}).") from None
    else:
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as e:
            raise SweepError(f"{path} is not valid JSON ({e}).") from None
    if not isinstance(spec, dict):
        raise SweepError(f"{path}: a sweep spec is a mapping (JSON object), got {type(spec)}.")
    return spec


@dataclass
class Cell:
    """One grid point: a preset, a seed and the fields it changes."""

    name: str
    preset: str
    seed: int
    params: dict[str, Any]  # axis -> value shown in the table
    overrides: dict[str, Any]  # "section.field" -> value

    def build(self):
        """(model config, task, train config) of this cell; ValueError naming a bad field."""
        from inducthead import configs
        from inducthead.tasks import from_dict
        from inducthead.train_config import TrainConfig

        preset = configs.get(self.preset).with_seed(self.seed)
        changes: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
        for key, value in self.overrides.items():
            section, _, name = key.partition(".")
            changes[section][name] = value
        model = preset.model.replace(**changes["model"]) if changes["model"] else preset.model
        task = from_dict({**preset.task, **changes["task"]})
        train = TrainConfig.from_dict(
            {**preset.train.to_dict(), "progress": False, **changes["train"]}
        )
        task.check_model(model)
        return model, task, train


_KNOWN = {"name", "out", "presets", "seeds", "set", "grid", "retries", "threshold"}


def _check_key(key: Any, where: str) -> str:
    if not isinstance(key, str):
        raise SweepError(f"{where}: parameter names are strings like 'train.lr', got {key!r}.")
    section, _, name = key.partition(".")
    if section not in SECTIONS or not name or "." in name:
        raise SweepError(
            f"{where}: parameter {key!r} must be model.FIELD, task.FIELD or train.FIELD."
        )
    if name == "seed":
        raise SweepError(f"{where}: {key!r}: seeds come from the spec's `seeds` list.")
    return key


def _label(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "-".join(_label(v) for v in value)
    return str(value)


def plan(spec: dict[str, Any]) -> list[Cell]:
    """Every cell of the spec, in a stable order; SweepError for a bad spec (checked before
    anything runs: every cell's configs are built once here)."""
    unknown = sorted(set(spec) - _KNOWN)
    if unknown:
        raise SweepError(f"sweep spec: unknown key(s) {unknown}; valid: {sorted(_KNOWN)}.")
    presets = spec.get("presets")
    if isinstance(presets, str):
        presets = [presets]
    if not presets or not all(isinstance(p, str) for p in presets):
        raise SweepError("sweep spec: `presets` must list one or more preset names.")
    seeds = spec.get("seeds", [0])
    if isinstance(seeds, int):
        seeds = [seeds]
    if (
        not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
        or len(set(seeds)) != len(seeds)
    ):
        raise SweepError(f"sweep spec: `seeds` must list distinct integers, got {seeds!r}.")
    fixed = spec.get("set", {}) or {}
    if not isinstance(fixed, dict):
        raise SweepError("sweep spec: `set` maps parameter names to values.")
    for key in fixed:
        _check_key(key, "set")
    grid = spec.get("grid", {}) or {}
    if not isinstance(grid, dict):
        raise SweepError("sweep spec: `grid` maps parameter names (or axis names) to lists.")
    axes: list[tuple[str, list[tuple[str, dict[str, Any]]]]] = []
    for axis, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"grid[{axis!r}] must be a non-empty list of values.")
        points = []
        for value in values:
            if isinstance(value, dict):  # a named axis: several fields per point
                value = dict(value)
                label = value.pop("label", None)
                changes = {_check_key(k, f"grid[{axis!r}]"): v for k, v in value.items()}
                label = (
                    _label(label) if label is not None else "-".join(map(_label, changes.values()))
                )
            else:
                changes = {_check_key(axis, "grid"): value}
                label = _label(value)
            points.append((label, changes))
        axes.append((str(axis), points))
    cells, by_name = [], {}
    for preset in presets:
        for combo in itertools.product(*(points for _, points in axes)):
            for seed in seeds:
                overrides = dict(fixed)
                params = {}
                for (axis, _), (label, changes) in zip(axes, combo, strict=True):
                    overrides.update(changes)
                    params[axis] = label
                parts = [preset, *(f"{a}={v}" for a, v in params.items()), f"seed={seed}"]
                name = sanitize_name(",".join(parts), default="cell")
                if name in by_name:
                    raise SweepError(
                        f"sweep cells {by_name[name]} and {parts} both map to the directory "
                        f"name {name!r}; make the grid values distinct."
                    )
                by_name[name] = parts
                cell = Cell(name, preset, seed, params, overrides)
                try:
                    cell.build()
                except (ValueError, TypeError) as e:
                    raise SweepError(f"sweep cell {name}: {e}") from None
                cells.append(cell)
    return cells


# ---------------------------------------------------------------------------------- one cell
def _summary(run, threshold: float) -> dict[str, Any]:
    from inducthead.emergence import emergence_step

    rows = run.metrics.to_dict("records")
    last = rows[-1] if rows else {}
    trained = [r for r in rows if r.get("train_loss") is not None]
    return {
        "final_step": run.meta.get("final_step"),
        "train_loss": trained[-1]["train_loss"] if trained else None,
        "eval_loss": last.get("eval_loss"),
        "best_prefix_matching": last.get("best_prefix_matching"),
        "best_previous_token": last.get("best_previous_token"),
        "emergence_step": emergence_step(rows, threshold),
    }


def run_cell(cell: dict[str, Any], sweep_dir: str, threshold: float = 0.5) -> dict[str, Any]:
    """Train one cell into `sweep_dir/<name>` (resuming it if interrupted; nothing to do if it
    finished) and return its table row. Runs in the sweep process or in a Ray worker."""
    from inducthead import Run, train
    from inducthead.model import HookedTransformer

    c = Cell(**cell)
    path = safe_child(sweep_dir, c.name, what="sweep cell name")
    model_cfg, task, cfg = c.build()
    start = time.perf_counter()
    meta_path = path / "run.json"
    if meta_path.is_file():
        with contextlib.suppress(ValueError, OSError):
            meta = json.loads(meta_path.read_text())
            if (
                meta.get("status") == "finished"
                and meta.get("final_step") == cfg.steps
                and meta.get("model") == json.loads(json.dumps(model_cfg.to_dict()))
                and meta.get("task") == json.loads(json.dumps(task.to_dict()))
            ):
                return {"status": "done before", **_summary(Run(path), threshold)}
    train(HookedTransformer(model_cfg), task, cfg, path, resume=True)
    return {
        "status": "finished",
        "seconds": time.perf_counter() - start,
        **_summary(Run(path), threshold),
    }


# ---------------------------------------------------------------------------------- backends
class LocalBackend:
    """Cells one after another in this process."""

    name = "local"

    def __init__(self) -> None:
        self._queue: list[tuple[Any, dict, str, float]] = []

    def submit(self, key, cell, sweep_dir, threshold) -> None:
        self._queue.append((key, cell, sweep_dir, threshold))

    def next_done(self):
        key, cell, sweep_dir, threshold = self._queue.pop(0)
        try:
            return key, run_cell(cell, sweep_dir, threshold), None
        except Exception as e:  # reported and retried by the driver (Ctrl-C is not caught)
            return key, None, _describe(e)

    def close(self) -> None:
        pass


class RayBackend:
    """Each cell a Ray task: on a local Ray cluster started here, or on `address`."""

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        cpus_per_cell: float = 1,
        gpus_per_cell: float = 0,
        num_cpus: int | None = None,
    ):
        try:
            import ray
        except ImportError:
            raise SweepError(
                "the ray backend needs Ray: pip install 'inducthead[ray]' (or use --backend local)."
            ) from None
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            kwargs = dict(include_dashboard=False, log_to_driver=False)
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=num_cpus, **kwargs)
        self.remote = ray.remote(num_cpus=cpus_per_cell, num_gpus=gpus_per_cell, max_retries=0)(
            run_cell
        )
        self.pending: dict[Any, Any] = {}

    def submit(self, key, cell, sweep_dir, threshold) -> None:
        self.pending[self.remote.remote(cell, sweep_dir, threshold)] = key

    def next_done(self):
        ready, _ = self.ray.wait(list(self.pending), num_returns=1)
        ref = ready[0]
        key = self.pending.pop(ref)
        try:
            return key, self.ray.get(ref), None
        except Exception as e:  # the task raised, or its worker died
            cause = getattr(e, "cause", None)
            return key, None, _describe(cause if isinstance(cause, BaseException) else e)

    def close(self) -> None:
        for ref in self.pending:
            with contextlib.suppress(Exception):
                self.ray.cancel(ref, force=True)
        if self.started:
            self.ray.shutdown()


def _describe(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip()
    return " ".join(text.split())[:500] or "".join(traceback.format_exception_only(e))


# ---------------------------------------------------------------------------------- the driver
@dataclass
class SweepResult:
    """One row per cell; `failed` lists the cells that did not finish."""

    path: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    axes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "failed"]

    def columns(self) -> list[str]:
        return ["cell", "preset", "seed", *self.axes, *COLUMNS[1:]]

    def to_dataframe(self):
        import pandas as pd

        return pd.DataFrame(self.rows, columns=self.columns())

    def table(self) -> str:
        """A markdown table (errors shortened; the full text is in results.csv)."""
        cols = [c for c in self.columns() if c not in ("cell", "error")]
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for r in self.rows:
            lines.append("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
        for r in self.failed:
            lines.append(f"\nfailed: {r['cell']} after {r['attempts']} attempt(s): {r['error']}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        done = sum(r["status"] != "failed" for r in self.rows)
        return f"SweepResult({self.path}: {done}/{len(self.rows)} cells done)\n{self.table()}"

    def write(self) -> None:
        from inducthead.checkpoint import atomic_write_text

        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns(), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(safe_child(self.path, "results.csv"), buf.getvalue())
        atomic_write_text(safe_child(self.path, "results.md"), self.table() + "\n")


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return "—" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def run_sweep(
    spec: dict[str, Any] | str | Path,
    out: str | Path | None = None,
    *,
    backend: str = "local",
    address: str | None = None,
    retries: int | None = None,
    cpus_per_cell: float = 1,
    gpus_per_cell: float = 0,
    ray_cpus: int | None = None,
    log: Callable[[str], None] | None = print,
) -> SweepResult:
    """Run every cell of `spec` (a dict or a spec file) into `out` (default: the spec's `out`)
    and return the gathered table; see the module docstring."""
    if not isinstance(spec, dict):
        spec = read_spec(spec)
    cells = plan(spec)
    out = out if out is not None else spec.get("out")
    if out is None:
        raise SweepError("no sweep directory: give --out DIR or an `out` entry in the spec.")
    sweep_dir = Path(out).expanduser().resolve()  # absolute: Ray workers have their own cwd
    sweep_dir.mkdir(parents=True, exist_ok=True)
    retries = int(spec.get("retries", 1) if retries is None else retries)
    threshold = float(spec.get("threshold", 0.5))
    if retries < 0:
        raise SweepError(f"retries must be >= 0, got {retries}.")
    from inducthead.checkpoint import atomic_write_text

    atomic_write_text(
        safe_child(sweep_dir, "sweep.json"),
        json.dumps({"spec": spec, "cells": [asdict(c) for c in cells]}, indent=2, default=str),
    )
    axes = list((spec.get("grid") or {}).keys())
    rows = {
        c.name: {
            "cell": c.name,
            "preset": c.preset,
            "seed": c.seed,
            **c.params,
            "status": "pending",
            "attempts": 0,
        }
        for c in cells
    }
    say = log or (lambda _: None)
    if backend == "local":
        runner: LocalBackend | RayBackend = LocalBackend()
    elif backend == "ray":
        runner = RayBackend(address, cpus_per_cell, gpus_per_cell, ray_cpus)
    else:
        raise SweepError(f"unknown backend {backend!r}; choose 'local' or 'ray'.")
    say(f"sweep: {len(cells)} cells into {sweep_dir} ({runner.name} backend)")
    by_name = {c.name: c for c in cells}
    try:
        outstanding = 0
        for c in cells:
            rows[c.name]["attempts"] = 1
            runner.submit(c.name, asdict(c), str(sweep_dir), threshold)
            outstanding += 1
        while outstanding:
            name, result, error = runner.next_done()
            outstanding -= 1
            row = rows[name]
            if error is None:
                row.update(result, error=None)
                say(f"  {row['status']}: {name} (emergence step {_fmt(row['emergence_step'])})")
                continue
            row.update(status="failed", error=error)
            if row["attempts"] <= retries:
                say(f"  retrying {name} (attempt {row['attempts']} failed: {error})")
                row["attempts"] += 1
                runner.submit(name, asdict(by_name[name]), str(sweep_dir), threshold)
                outstanding += 1
            else:
                say(f"  failed: {name} after {row['attempts']} attempt(s): {error}")
    finally:
        runner.close()
        result = SweepResult(sweep_dir, [rows[c.name] for c in cells], axes)
        result.write()
    return result
