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

from inducthead.sweep.backends import LocalBackend, RayBackend
from inducthead.sweep.cells import run_cell
from inducthead.sweep.driver import COLUMNS, SweepResult, run_sweep
from inducthead.sweep.spec import Cell, SweepError, plan, read_spec

__all__ = [
    "run_sweep",
    "SweepResult",
    "SweepError",
    "read_spec",
    "plan",
    "Cell",
    "run_cell",
    "LocalBackend",
    "RayBackend",
    "COLUMNS",
]
