"""One style for every trajectory picture: a symmetric-log step axis (step 0 stays on it), heads
named `L1H4` with one colour per head across panels, the phase-change window shaded, trajectories
in PCA space coloured by step."""

from __future__ import annotations

import numpy as np

WINDOW_COLOUR = "#f2c14e"
CMAP = "viridis"


def figure(n_panels: int = 1, width: float = 5.2, height: float = 3.4, **kwargs):
    import matplotlib.pyplot as plt

    cols = min(n_panels, 3)
    rows = -(-n_panels // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(width * cols, height * rows), squeeze=False, **kwargs
    )
    for ax in list(axes.flat)[n_panels:]:
        ax.axis("off")
    return fig, list(axes.flat)[:n_panels]


def step_axis(ax, steps, label: str = "training step") -> None:
    """Log-like step axis that keeps step 0: symlog with a linear stretch below the first
    non-zero checkpoint."""
    positive = [s for s in steps if s > 0]
    ax.set_xscale("symlog", linthresh=min(positive) if positive else 1.0)
    ax.set_xlabel(label)
    ax.grid(True, alpha=0.25, which="both")


def shade(ax, window, label: str = "phase change") -> None:
    """Shade `window` (a `stages.Window` or its dict) on `ax`."""
    if window is None:
        return
    w = window if isinstance(window, dict) else window.to_dict()
    ax.axvspan(w["start"], w["end"], color=WINDOW_COLOUR, alpha=0.3, lw=0, label=label)


def head_colours(labels) -> dict[str, tuple]:
    """One colour per head label, stable across panels (layer-major order)."""
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    return {lab: cmap(i % cmap.N) for i, lab in enumerate(labels)}


def step_colours(steps):
    """A log-scaled colour normaliser over `steps` (for PCA trajectories and loss curves)."""
    import matplotlib.colors as mcolors

    positive = [s for s in steps if s > 0] or [1]
    return mcolors.SymLogNorm(linthresh=min(positive), vmin=min(steps), vmax=max(max(steps), 1))


def trajectory(ax, xy: np.ndarray, steps, label: str | None = None, marker: str = "o", norm=None):
    """A 2-D trajectory: a grey line through the checkpoints, points coloured by step, the
    first and last checkpoints annotated."""
    xy = np.asarray(xy, dtype=float)
    ax.plot(xy[:, 0], xy[:, 1], color="0.7", lw=1, zorder=1)
    sc = ax.scatter(
        xy[:, 0],
        xy[:, 1],
        c=list(steps),
        cmap=CMAP,
        norm=norm or step_colours(steps),
        marker=marker,
        s=28,
        zorder=2,
        label=label,
    )
    for i in (0, len(xy) - 1):
        ax.annotate(
            str(list(steps)[i]), xy[i], textcoords="offset points", xytext=(4, 4), fontsize=7
        )
    return sc


def finish(fig, title: str | None = None):
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
