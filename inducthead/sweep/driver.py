"""`run_sweep`: plan the cells, run them on a backend (retrying failures), gather the table."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from inducthead.analysis.results import Result, nan_if_none
from inducthead.runs import safe_child
from inducthead.runs.files import atomic_write_text
from inducthead.sweep.backends import LocalBackend, RayBackend
from inducthead.sweep.spec import SweepError, plan, read_spec

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


# Columns holding floats (NaN in JSON as null).
_NUMBERS = ("train_loss", "eval_loss", "best_prefix_matching", "best_previous_token", "seconds")


@dataclass
class SweepResult(Result):
    """One row per cell (`rows`, `to_dataframe()`); `failed` lists the cells that did not finish;
    `plot()` shows each cell's emergence step."""

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

    def to_dict(self) -> dict:
        return {"path": str(self.path), "rows": self.rows, "axes": self.axes}

    @classmethod
    def from_dict(cls, d: dict) -> SweepResult:
        rows = [
            {k: nan_if_none(v) if k in _NUMBERS else v for k, v in row.items()} for row in d["rows"]
        ]
        return cls(Path(d["path"]), rows, list(d["axes"]))

    def table(self) -> str:
        """A markdown table (errors shortened; the full text is in results.csv)."""
        cols = [c for c in self.columns() if c not in ("cell", "error")]
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for r in self.rows:
            lines.append("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
        for r in self.failed:
            lines.append(f"\nfailed: {r['cell']} after {r['attempts']} attempt(s): {r['error']}")
        return "\n".join(lines)

    def plot(self, **kwargs):
        """Two panels, one bar per cell: its emergence step (a hollow bar to the final step: no
        emergence by the end; "failed" for a cell that did not finish) and its final best
        prefix-matching score (0 to 1)."""
        from inducthead import plotstyle

        if not self.rows:
            raise ValueError(f"{self.path}: the sweep has no cells to plot.")
        names = [r["cell"] for r in self.rows]
        y = range(len(names))
        fig, (steps_ax, score_ax) = plotstyle.panel_grid(
            2, panel_size=(4.6, 0.32 * len(names) + 1.6), **kwargs
        )
        failed = [r["status"] == "failed" for r in self.rows]
        found = [r.get("emergence_step") for r in self.rows]
        ends = [r.get("final_step") or 0 for r in self.rows]
        emerged = [s if s is not None else 0 for s in found]
        missing = [
            e if s is None and not f else 0 for s, e, f in zip(found, ends, failed, strict=True)
        ]
        steps_ax.barh(
            y,
            emerged,
            color="C0",
            label=_label("emergence step", any(s is not None for s in found)),
        )
        no_emergence = _label("no emergence by the final step", any(missing))
        steps_ax.barh(y, missing, fill=False, edgecolor="C3", label=no_emergence)
        for i in (i for i, f in enumerate(failed) if f):
            steps_ax.text(0, i, " failed", va="center", fontsize=8, color="C3")
        steps_ax.set_xlabel("training step")
        score = [nan_if_none(r.get("best_prefix_matching")) for r in self.rows]
        score_ax.barh(y, [0 if v != v else v for v in score], color="C2")
        score_ax.set_xlim(0, 1)
        score_ax.set_xlabel("final best prefix-matching score")
        for ax in (steps_ax, score_ax):
            ax.set_yticks(list(y), names, fontsize=8)
            ax.invert_yaxis()
        plotstyle.figure_legend(fig)
        return plotstyle.finish(fig, f"sweep {self.path.name}: {len(self.rows)} cells")

    def __repr__(self) -> str:
        done = sum(r["status"] != "failed" for r in self.rows)
        return f"SweepResult({self.path}: {done}/{len(self.rows)} cells done)"

    def write(self) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns(), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(safe_child(self.path, "results.csv"), buf.getvalue())
        atomic_write_text(safe_child(self.path, "results.md"), self.table() + "\n")


def _label(text: str, shown: bool) -> str:
    """A legend label for a mark that is drawn, none for one that is not."""
    return text if shown else "_nolegend_"


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
