"""When did something emerge? The one definition of a first crossing, used by the sweep table,
`emergence_step` on logged metrics and `inducthead.dynamics.Trajectory.emergence` on checkpoints.

`first_crossing(steps, values, threshold)` finds the first evaluated step at which the series
reaches the threshold (>= for direction "up", <= for "down"; NaN evaluations are skipped) and
interpolates linearly between that evaluation and the one before it, so the crossing is placed
between checkpoints instead of on the next one. `emergence_step` reports the evaluated step
(`Crossing.after`), as the sweep table always has; trajectories report the interpolated step.

`emergence_step` reads the metrics `train` logs: by default the best prefix-matching head of
layers >= 1 and the best previous-token head, each >= 0.5 (the series is their minimum): the
induction head and the previous-token head it composes with are both in place (Olsson et al.
2022).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inducthead.runs import Run

DEFAULT_COLUMNS = ("best_prefix_matching", "best_previous_token")


@dataclass(frozen=True)
class Crossing:
    """Where a series first reaches a threshold: `step` interpolated linearly between `before`
    (the last evaluation short of it; None if the first evaluation already reaches it) and
    `after` (the first evaluation that reaches it)."""

    step: float
    before: int | None
    after: int
    threshold: float
    direction: str = "up"


def _number(v) -> float:
    return float(v) if isinstance(v, (int, float)) and not math.isnan(v) else math.nan


def first_crossing(
    steps: Sequence[int], values: Sequence[float], threshold: float, direction: str = "up"
) -> Crossing | None:
    """The first crossing of `threshold` by `values` (at `steps`, in any order), or None.

    direction "up": the first value >= threshold; "down": the first value <= threshold. NaN and
    missing values are skipped (neither a crossing nor an interpolation end)."""
    if direction not in ("up", "down"):
        raise ValueError(f"direction must be 'up' or 'down', got {direction!r}.")
    points = sorted(
        (int(s), _number(v))
        for s, v in zip(steps, values, strict=True)
        if not math.isnan(_number(v))
    )
    sign = 1.0 if direction == "up" else -1.0
    previous = None
    for step, value in points:
        if sign * (value - threshold) >= 0:
            if previous is None:
                return Crossing(float(step), None, step, threshold, direction)
            s0, v0 = previous
            frac = (threshold - v0) / (value - v0) if value != v0 else 1.0
            return Crossing(s0 + frac * (step - s0), s0, step, threshold, direction)
        previous = (step, value)
    return None


def _row_min(row: Mapping[str, Any], columns: Sequence[str]) -> float:
    """The smallest of a row's `columns`, NaN if any is missing or NaN."""
    values = [_number(row.get(c)) for c in columns]
    return math.nan if not values or any(math.isnan(v) for v in values) else min(values)


def _rows(metrics: Any) -> list[Mapping[str, Any]]:
    """Metrics rows from a Run, a run directory, a pandas DataFrame or an iterable of dicts."""
    if isinstance(metrics, (str, Path)):
        metrics = Run(metrics)
    if isinstance(metrics, Run):
        metrics = metrics.metrics
    if hasattr(metrics, "to_dict") and hasattr(metrics, "columns"):  # a DataFrame
        return metrics.to_dict("records")
    if isinstance(metrics, Iterable):
        return list(metrics)
    raise TypeError(
        "emergence_step expects a Run, a run directory, a DataFrame or metrics rows, got "
        f"{type(metrics).__name__}."
    )


def emergence_step(
    metrics: Any, threshold: float = 0.5, columns: Sequence[str] = DEFAULT_COLUMNS
) -> int | None:
    """First logged step at which every score in `columns` is >= `threshold` (None if never):
    `first_crossing(...).after` of the row-wise minimum of the columns.

    >>> emergence_step(inducthead.Run("runs/demo"))   # e.g. 270 for the demo preset, seed 0
    """
    rows = _rows(metrics)
    series = [_row_min(r, columns) for r in rows]
    crossing = first_crossing([r["step"] for r in rows], series, threshold)
    return None if crossing is None else crossing.after
