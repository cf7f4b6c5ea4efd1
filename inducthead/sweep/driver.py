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
        """Emergence step of every cell (a hollow bar: the run ended without emergence)."""
        import matplotlib.pyplot as plt

        names = [r["cell"] for r in self.rows]
        steps = [r.get("emergence_step") for r in self.rows]
        ends = [r.get("final_step") or 0 for r in self.rows]
        fig, ax = plt.subplots(figsize=(6, 0.35 * len(names) + 1.2), **kwargs)
        found = [s if s is not None else 0 for s in steps]
        ax.barh(names, found, color="C0")
        missing = [e if s is None else 0 for s, e in zip(steps, ends, strict=True)]
        ax.barh(names, missing, fill=False, edgecolor="C3", label="no emergence by the end")
        ax.set_xlabel("emergence step")
        ax.invert_yaxis()
        if any(missing):
            ax.legend(fontsize=8)
        fig.tight_layout()
        return fig

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
