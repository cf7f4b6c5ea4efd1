"""Stage signals over a trajectory: where a curve changes fastest, where it turns.

All derivatives are taken against x = ln(1 + step): training dynamics are read on a log-step
axis (Olsson et al. 2022 plot against tokens on a log axis; Hoogland et al. 2024 use d/d log t),
and 1 + step keeps step 0.

- `steepest_window(steps, values, direction)`: the phase-change rule. The interval between two
  consecutive checkpoints where the curve changes fastest in `direction` per unit of log-step,
  widened over the neighbouring intervals whose rate is at least `fraction` (default 0.5: the
  full width at half maximum of the rate) of that peak. Applied to the ICL score (falling) it is
  `Trajectory.phase_change`; to the loss, a head score or the LLC it gives their windows.
- `critical_points(steps, values)`: steps where d values / d log t changes sign (local extrema of
  the curve): Hoogland et al. 2024's stage boundaries from the LLC.
- `smooth(values, sigma)`: Gaussian smoothing over checkpoint index.
- `turning_points(steps, coords)`: local extrema of each principal-component coordinate of an
  essential-dynamics trajectory, with their prominence.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def log_steps(steps) -> np.ndarray:
    return np.log1p(np.asarray(steps, dtype=float))


def rates(steps, values) -> np.ndarray:
    """d values / d ln(1 + step) on each interval between consecutive checkpoints."""
    x, y = log_steps(steps), np.asarray(values, dtype=float)
    return np.diff(y) / np.diff(x)


@dataclass(frozen=True)
class Window:
    """A stretch of training [start, end] (checkpoint steps) around the fastest change
    [peak_start, peak_end]; `peak_rate` is the change per unit of ln(1 + step) there."""

    start: int
    end: int
    peak_start: int
    peak_end: int
    peak_rate: float
    signal: str
    rule: str

    def contains(self, step: float, slack: int = 0, steps=None) -> bool:
        """Whether `step` lies in the window, or within `slack` checkpoints of it (`steps`)."""
        lo, hi = self.start, self.end
        if slack and steps is not None:
            steps = sorted(steps)
            i, j = steps.index(lo), steps.index(hi)
            lo, hi = steps[max(0, i - slack)], steps[min(len(steps) - 1, j + slack)]
        return lo <= step <= hi

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"steps {self.start}-{self.end}"


def steepest_window(
    steps, values, direction: str = "down", fraction: float = 0.5, signal: str = "value"
) -> Window | None:
    """The phase-change rule of the module docstring, on `values` at sorted `steps`; None when
    the curve never moves in `direction` (or has fewer than 2 finite points)."""
    if direction not in ("up", "down", "any"):
        raise ValueError(f"direction must be 'up', 'down' or 'any', got {direction!r}.")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}.")
    steps, values = np.asarray(steps), np.asarray(values, dtype=float)
    keep = np.isfinite(values)
    steps, values = steps[keep], values[keep]
    if len(steps) < 2:
        return None
    r = rates(steps, values)
    signed = {"up": r, "down": -r, "any": np.abs(r)}[direction]
    peak = int(np.argmax(signed))
    if signed[peak] <= 0:
        return None
    lo = hi = peak
    while lo > 0 and signed[lo - 1] >= fraction * signed[peak]:
        lo -= 1
    while hi < len(signed) - 1 and signed[hi + 1] >= fraction * signed[peak]:
        hi += 1
    verb = {"up": "rises", "down": "falls", "any": "changes"}[direction]
    rule = (
        f"the {signal} {verb} at >= {fraction:g} x its fastest rate per unit of ln(1 + step) "
        f"(fastest: {r[peak]:+.3g} between steps {int(steps[peak])} and {int(steps[peak + 1])})"
    )
    return Window(
        int(steps[lo]),
        int(steps[hi + 1]),
        int(steps[peak]),
        int(steps[peak + 1]),
        float(r[peak]),
        signal,
        rule,
    )


def critical_points(steps, values) -> list[int]:
    """Checkpoint steps where d values / d ln(1 + step) changes sign (local maxima and minima of
    the curve; flat stretches count once), in order."""
    steps, values = np.asarray(steps), np.asarray(values, dtype=float)
    keep = np.isfinite(values)
    steps, values = steps[keep], values[keep]
    if len(steps) < 3:
        return []
    signs = np.sign(rates(steps, values))
    out, last = [], 0.0
    for i, s in enumerate(signs):
        if s == 0:
            continue
        if last and s != last:
            out.append(int(steps[i]))
        last = s
    return out


def smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing along axis 0 (checkpoint index), `sigma` in checkpoints; edges are
    renormalised (no padding). sigma <= 0 returns the values unchanged."""
    values = np.asarray(values, dtype=float)
    if sigma <= 0 or len(values) < 3:
        return values
    idx = np.arange(len(values))
    weights = np.exp(-0.5 * ((idx[:, None] - idx[None, :]) / sigma) ** 2)
    weights /= weights.sum(1, keepdims=True)
    return np.tensordot(weights, values, axes=(1, 0))


def turning_points(steps, coords: np.ndarray, min_prominence: float = 0.05) -> list[dict]:
    """Local extrema of each column of `coords` (`[checkpoints, k]` principal-component
    coordinates) over the checkpoints: `{"step", "component", "kind", "prominence"}`, the
    prominence (how far the curve falls back on both sides) as a share of the largest
    component's range, so a component that hardly moves has no turning point; extrema below
    `min_prominence` are jitter and dropped. Most prominent first."""
    steps = np.asarray(steps)
    coords = np.asarray(coords, dtype=float)
    out = []
    span = float((coords.max(0) - coords.min(0)).max()) if coords.size else 1.0
    span = span or 1.0
    for k in range(coords.shape[1]):
        y = coords[:, k]
        for i in range(1, len(y) - 1):
            left, right = y[i] - y[:i].min(), y[i] - y[i + 1 :].min()
            if y[i] >= y[i - 1] and y[i] > y[i + 1]:
                kind, prom = "max", min(left, right)
            elif y[i] <= y[i - 1] and y[i] < y[i + 1]:
                left, right = y[:i].max() - y[i], y[i + 1 :].max() - y[i]
                kind, prom = "min", min(left, right)
            else:
                continue
            if prom / span >= min_prominence:
                out.append(
                    {
                        "step": int(steps[i]),
                        "component": k + 1,
                        "kind": kind,
                        "prominence": float(prom / span),
                    }
                )
    return sorted(out, key=lambda t: -t["prominence"])
