"""When did the induction circuit emerge in a run? Read from the logged metrics.

`emergence_step` is the first evaluated step at which every given score column reaches the
threshold; by default the best prefix-matching head of layers >= 1 and the best previous-token
head (both logged by `train` in metrics.jsonl), each >= 0.5: the induction head and the
previous-token head it composes with are both in place (Olsson et al. 2022). Used by the sweep
table and by anything that compares runs (dynamics, paper reproductions).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from inducthead.runs import Run

DEFAULT_COLUMNS = ("best_prefix_matching", "best_previous_token")


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
    """First logged step at which every score in `columns` is >= `threshold` (None if never).

    >>> emergence_step(inducthead.Run("runs/demo"))   # e.g. 270 for the demo preset, seed 0
    """
    rows = sorted(_rows(metrics), key=lambda r: r["step"])
    for row in rows:
        values = [row.get(c) for c in columns]
        if all(
            isinstance(v, (int, float)) and not math.isnan(v) and v >= threshold for v in values
        ):
            return int(row["step"])
    return None
