"""Emergence times and the log-log law (Musat et al. 2025, Theorem 2 / Corollary 1 per secondary
notes: T_gamma = Theta(N), T_beta, T_alpha = Theta(N^2), emergence Theta(N^2)).

Two definitions (PROVISIONAL: ours; the paper's own was not read):

- "loss": the first time the population loss reaches half the plateau loss, i.e. the midpoint
  between the plateau (the best readout with uniform attention, `gram.plateau`) and the
  infimum 0 (the task is solved exactly as the attention logits grow). Interpolated by
  `analysis.emergence.first_crossing`.
- "coordinate": the first time a coordinate reaches half its value at the end of the run; every
  run ends when its loss is 5% of its plateau, the same relative progress for every N. The
  emergence time of the induction head under this definition is the latest of the three
  (gamma3, beta2, alpha3).

Times are in coordinate time tau (gradient flow on the 19 coordinates, which is W-space flow
at fixed D up to the factor D) or W-space time at D = 2N + 2 (t = D tau): the two dimension
conventions (`subspace`).
"""

from __future__ import annotations

import math

import numpy as np

from inducthead.analysis.emergence import first_crossing
from inducthead.papers.musat.subspace import HEADLINE, NAMES

DEFINITIONS = ("loss", "coordinate")
CONVENTIONS = ("fixed_D", "D_2N+2")


def _crossing(time: np.ndarray, values: np.ndarray, threshold: float, direction: str) -> float:
    dt = float(time[1] - time[0]) if len(time) > 1 else 1.0
    steps = np.rint(time / dt).astype(int)
    c = first_crossing(steps.tolist(), values.tolist(), threshold, direction)
    return c.step * dt if c is not None else math.nan


def loss_time(time: np.ndarray, loss: np.ndarray, plateau: float) -> float:
    """First time the loss is <= plateau / 2 (NaN if never)."""
    return _crossing(time, loss, plateau / 2, "down")


def coordinate_times(
    time: np.ndarray, coords: np.ndarray, names: tuple[str, ...] = HEADLINE
) -> dict[str, float]:
    """`{name: first time the coordinate reaches half its final value}` (`coords [R, 19]`)."""
    out = {}
    for n in names:
        v = coords[:, NAMES.index(n)]
        final = float(v[-1])
        sign = 1.0 if final >= 0 else -1.0
        out[n] = _crossing(time, sign * v, abs(final) / 2, "up") if final else math.nan
    return out


def order(times: dict[str, float]) -> list[str]:
    """Names sorted by emergence time (NaN last)."""
    return sorted(times, key=lambda n: (math.isnan(times[n]), times[n]))


def loglog_fit(n: np.ndarray, t: np.ndarray) -> dict:
    """OLS of log t on log n over the per-N means of log t: slope, intercept and the slope's
    95% confidence interval (Student t, len(unique n) - 2 degrees of freedom), and the local
    slope between the two largest N."""
    from scipy import stats

    n, t = np.asarray(n, float), np.asarray(t, float)
    ok = np.isfinite(t) & (t > 0)
    xs = np.unique(n[ok])
    if len(xs) < 3:
        raise ValueError(f"a log-log fit needs >= 3 distinct N with finite times, got {len(xs)}.")
    ys = np.array([np.log(t[ok & (n == x)]).mean() for x in xs])
    x = np.log(xs)
    fit = stats.linregress(x, ys)
    half = stats.t.ppf(0.975, len(xs) - 2) * fit.stderr
    return {
        "slope": float(fit.slope),
        "ci": [float(fit.slope - half), float(fit.slope + half)],
        "intercept": float(fit.intercept),
        "local_slope": float((ys[-1] - ys[-2]) / (x[-1] - x[-2])),
        "n": xs.tolist(),
        "mean_time": np.exp(ys).tolist(),
    }
