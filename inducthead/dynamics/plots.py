"""Trajectory pictures in the package style (`inducthead.plotstyle`): the phase-change window
from a `stages.Window` (or its dict), and 2-D trajectories in PCA space coloured by step."""

from __future__ import annotations

import numpy as np


def shade(ax, window, label: str = "phase change") -> None:
    """Shade `window` (a `stages.Window`, its dict, or None: nothing) on `ax`, with a legend
    entry `label`."""
    from inducthead import plotstyle

    if window is None:
        return
    w = window if isinstance(window, dict) else window.to_dict()
    plotstyle.shade_window(ax, w["start"], w["end"], label)


def trajectory(ax, xy: np.ndarray, steps, label: str | None = None, marker: str = "o", norm=None):
    """A 2-D trajectory: a grey line through the checkpoints, points coloured by step
    (`plotstyle.STEP_CMAP`), the first and last checkpoints annotated with their step."""
    from inducthead import plotstyle

    xy = np.asarray(xy, dtype=float)
    steps = list(steps)
    ax.plot(xy[:, 0], xy[:, 1], color="0.7", lw=1, zorder=1)
    sc = ax.scatter(
        xy[:, 0],
        xy[:, 1],
        c=steps,
        cmap=plotstyle.STEP_CMAP,
        norm=norm or plotstyle.step_norm(steps),
        marker=marker,
        s=28,
        zorder=2,
        label=label,
    )
    for i in (0, len(xy) - 1):
        ax.annotate(
            f"step {steps[i]}", xy[i], textcoords="offset points", xytext=(4, 4), fontsize=7
        )
    return sc
