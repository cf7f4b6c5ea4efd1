"""The standard-transformer check (Musat et al. 2025, section 4 per secondary notes): our
`HookedTransformer` (preset `musat-standard`) trained with cross-entropy on item-label pairs,
with the progress measures of `inducthead.dynamics` (alpha ~ alpha3, beta ~ beta2,
gamma ~ gamma3; PROVISIONAL definitions) read over its checkpoints by a `Trajectory`.

Emergence time of a measure (PROVISIONAL, ours): the first checkpoint at which it reaches half
its value at the end of the loss drop, the first checkpoint whose held-out loss is <= 10% of
the initial loss (cross-entropy keeps growing the logits afterwards, so the measures' final
values depend on the run length; the loss drop does not).
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pandas as pd

from inducthead import presets
from inducthead.analysis.emergence import first_crossing
from inducthead.dynamics import Trajectory
from inducthead.model import HookedTransformer
from inducthead.training import train

MEASURES = {"gamma": "gamma3", "beta": "beta2", "alpha": "alpha3"}


def run(seed: int = 0, steps: int | None = None, out_dir=None, device=None, progress=True) -> dict:
    """Train `musat-standard` and time its progress measures: `{"times": {measure: step},
    "order": [...], "loss_drop_step", "measures": tidy DataFrame, "losses": DataFrame}`."""
    preset = presets.get("musat-standard").with_seed(seed)
    cfg = preset.train.replace(progress=progress, device=device or "auto")
    if steps is not None:  # the preset's checkpoints that fall inside the shorter run
        cfg = cfg.shortened(steps)
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(out_dir) / f"standard_seed{seed}" if out_dir else Path(tmp) / "run"
        train(HookedTransformer(preset.model), preset.make_task(), cfg, where, overwrite=True)
        traj = Trajectory(where, progress=progress)
        return summarise(traj.progress_measures().data, traj.losses())


def summarise(measures: pd.DataFrame, losses: pd.DataFrame) -> dict:
    """Emergence times of the three measures (module docstring) from the tidy progress-measure
    table (step, measure, value) and a loss table with `step` and `eval_loss` or `loss`."""
    col = "eval_loss" if "eval_loss" in losses else "loss"
    lo = losses.dropna(subset=[col]).sort_values("step")
    drop = first_crossing(lo["step"].tolist(), lo[col].tolist(), 0.1 * lo[col].iloc[0], "down")
    end = drop.after if drop else int(lo["step"].iloc[-1])
    times = {}
    for m in MEASURES:
        d = measures[measures["measure"] == m].groupby("step")["value"].max().sort_index()
        ref = float(d[d.index <= end].iloc[-1]) if (d.index <= end).any() else math.nan
        c = first_crossing(d.index.tolist(), d.tolist(), ref / 2, "up") if ref > 0 else None
        times[m] = c.step if c else math.nan
    order = sorted(times, key=lambda n: (math.isnan(times[n]), times[n]))
    return {
        "times": times,
        "order": order,
        "loss_drop_step": drop.step if drop else math.nan,
        "measures": measures,
        "losses": lo[["step", col]].rename(columns={col: "loss"}),
    }
