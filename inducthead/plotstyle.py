"""One style for every inducthead figure. Imports matplotlib and numpy only, so every layer of
the package may use it (import it inside `plot()`: matplotlib takes a second to import).

- Colour follows the quantity, never the data's sign, so a score looks the same in every model:
  `colour_scale(kind, values)` with kinds "score" (in [0, 1]: viridis on 0..1), "signed" (in
  [-1, 1], e.g. copying scores: RdBu_r on -1..1) and "effect" (signed, no fixed range, e.g.
  ablated - clean: RdBu_r centred at 0 with limits ±max|value| of the data, so a 0.05-nat effect
  is as visible as a 5-nat one).
- `new_figure` / `panel_grid` make figures pyplot does not manage: a `plot()` returning one
  displays exactly once in Jupyter (as the cell's value), nothing accumulates in pyplot, and
  `fig.savefig(path)` writes it.
- `head_heatmap` draws a layer x head grid: axes "Layer" / "Head", values in the cells of small
  grids, chosen heads outlined with a legend entry saying what the outline means.
- Trajectories: `step_axis` (log-like, step 0 kept), `shade_window` (with a legend entry),
  `head_colours`, `step_norm`, `legend`.

Head names (`L1H4`) in titles and legends are written by the callers with
`inducthead.analysis.heads.head_label`: this bottom layer imports nothing of inducthead.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import matplotlib.figure
import numpy as np
from matplotlib import colormaps, patheffects
from matplotlib.colors import SymLogNorm
from matplotlib.patches import Rectangle

SCORE_CMAP = "viridis"  # sequential: scores in [0, 1]
SIGNED_CMAP = "RdBu_r"  # diverging, white at 0: signed quantities
STEP_CMAP = "plasma"  # training step (kept apart from the score map)
WINDOW_COLOUR = "#f2c14e"  # the phase-change window
MISSING_COLOUR = "0.85"  # NaN cells (e.g. K-composition in layer 0)
KINDS = ("score", "signed", "effect")
# Small grids get their values written in the cells.
CELL_VALUES_MAX = 64
CELL_VALUES_MAX_HEADS = 12
# Outline styles, in the order of `head_heatmap`'s highlight groups.
OUTLINES = ({"ls": "-", "ec": "black"}, {"ls": "--", "ec": "#7a0177"})


class Scale(NamedTuple):
    """A colour map and its limits."""

    cmap: str
    vmin: float
    vmax: float


class Figure(matplotlib.figure.Figure):
    """A matplotlib Figure that pyplot does not manage. IPython shows it once, as a PNG, when a
    cell returns it (also before any pyplot backend is loaded); `plt.show()` does not see it."""

    def _repr_png_(self) -> bytes | None:
        if not self.axes:
            return None
        buf = io.BytesIO()
        self.savefig(buf, format="png", bbox_inches="tight")
        return buf.getvalue()


_SUBPLOT_KEYS = ("sharex", "sharey", "subplot_kw", "gridspec_kw", "width_ratios", "height_ratios")


def new_figure(
    nrows: int = 1,
    ncols: int = 1,
    *,
    panel_size: tuple[float, float] = (5.2, 3.4),
    **kwargs,
) -> tuple[Figure, np.ndarray]:
    """A `Figure` (not registered with pyplot) and its `[nrows, ncols]` array of axes, laid out
    with constrained layout. `figsize` defaults to `panel_size` per panel; other keywords go to
    `Figure` (dpi, layout, ...) or `Figure.subplots` (sharex, sharey, gridspec_kw, ...)."""
    if nrows < 1 or ncols < 1:
        raise ValueError(f"a figure needs at least one row and column, got {nrows} x {ncols}.")
    grid = {k: kwargs.pop(k) for k in _SUBPLOT_KEYS if k in kwargs}
    kwargs.setdefault("figsize", (panel_size[0] * ncols, panel_size[1] * nrows))
    kwargs.setdefault("layout", "constrained")
    fig = Figure(**kwargs)
    axes = fig.subplots(nrows, ncols, squeeze=False, **grid)
    return fig, axes


def panel_grid(
    n: int, *, max_cols: int = 3, panel_size: tuple[float, float] = (5.2, 3.4), **kwargs
) -> tuple[Figure, list]:
    """`n` panels in rows of at most `max_cols`: the figure and a flat list of `n` axes (the
    unused cells of the last row are turned off)."""
    if n < 1:
        raise ValueError(f"panel_grid needs at least one panel, got {n}.")
    cols = min(n, max_cols)
    fig, axes = new_figure(-(-n // cols), cols, panel_size=panel_size, **kwargs)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.axis("off")
    return fig, flat[:n]


def finish(fig: Figure, title: str | None = None) -> Figure:
    """Give `fig` its title and return it (what every `plot()` returns)."""
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


# ---------------------------------------------------------------------------- colour by quantity
def colour_scale(kind: str, values=None) -> Scale:
    """The colour map and limits for a quantity of `kind` (module docstring). Only "effect"
    reads `values`: symmetric limits ±max|finite value| (±1 when there is none or all are 0)."""
    if kind == "score":
        return Scale(SCORE_CMAP, 0.0, 1.0)
    if kind == "signed":
        return Scale(SIGNED_CMAP, -1.0, 1.0)
    if kind == "effect":
        bound = max_abs(values)
        bound = bound if bound > 0 else 1.0
        return Scale(SIGNED_CMAP, -bound, bound)
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")


def max_abs(values) -> float:
    """The largest |finite value| (0.0 for none)."""
    if values is None:
        return 0.0
    a = np.asarray(values, dtype=float)
    a = a[np.isfinite(a)]
    return float(np.abs(a).max()) if a.size else 0.0


def cell_format(kind: str, bound: float) -> str:
    """Format of the values written in heatmap cells: 2 decimals for bounded scores; effects
    signed, with the decimals that show 3 digits of the largest (`bound`), or in e-notation
    below 0.001."""
    if kind != "effect":
        return "{:.2f}"
    digits = 2 - math.floor(math.log10(bound)) if bound > 0 else 2
    return f"{{:+.{max(digits, 0)}f}}" if digits <= 4 else "{:+.2e}"


# ---------------------------------------------------------------------------- head heatmaps
def head_heatmap(
    ax,
    grid,
    kind: str = "score",
    *,
    values_in_cells: bool | None = None,
    highlight: Iterable[tuple[int, int]] = (),
    highlight_label: str = "highlighted head",
    title: str | None = None,
    colorbar: bool = True,
    colorbar_label: str | None = None,
    legend_below: bool = True,
):
    """Draw a `[n_layers, n_heads]` grid on `ax` (layer 0 at the top) in the colours of `kind`
    (`colour_scale`); returns the image. `values_in_cells` defaults to small grids (at most 64
    cells, 12 heads). `highlight` heads are outlined and the outline gets the legend entry
    `highlight_label`; for several groups pass `highlight` as a dict {label: heads} (solid, then
    dashed outlines); the legend goes below the axes (`legend_below=False`: leave it to the
    caller, e.g. `figure_legend` for one legend shared by several panels). NaN cells are grey and
    left blank."""
    values = np.asarray(grid)
    if not np.issubdtype(values.dtype, np.floating):
        values = values.astype(float)  # floats kept as they are: the image holds the data
    if values.ndim != 2:
        raise ValueError(
            f"head_heatmap needs a [n_layers, n_heads] grid, got shape {values.shape}."
        )
    n_layers, n_heads = values.shape
    scale = colour_scale(kind, values)
    cmap = colormaps[scale.cmap].with_extremes(bad=MISSING_COLOUR)
    im = ax.imshow(
        values, cmap=cmap, vmin=scale.vmin, vmax=scale.vmax, aspect="auto", interpolation="nearest"
    )
    ax.set_xlabel("Head")
    ax.set_ylabel("Layer")
    if n_heads <= 32:
        ax.set_xticks(range(n_heads))
    if n_layers <= 32:
        ax.set_yticks(range(n_layers))
    if title:
        ax.set_title(title, fontsize=10)
    if values_in_cells is None:
        values_in_cells = values.size <= CELL_VALUES_MAX and n_heads <= CELL_VALUES_MAX_HEADS
    if values_in_cells:
        _write_cells(ax, im, values, cell_format(kind, scale.vmax))
    groups = highlight if isinstance(highlight, dict) else {highlight_label: highlight}
    if len(groups) > len(OUTLINES):
        raise ValueError(f"at most {len(OUTLINES)} highlight groups, got {len(groups)}.")
    for (label, heads), style in zip(groups.items(), OUTLINES, strict=False):
        outline_heads(ax, heads, label, **style)
    if legend_below:
        below_axes_legend(ax)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, shrink=0.85, label=colorbar_label)
    return im


def _write_cells(ax, im, values: np.ndarray, fmt: str) -> None:
    size = 9 if values.shape[1] <= 4 else 7
    for (l, h), v in np.ndenumerate(values):
        if not np.isfinite(v):
            continue
        r, g, b, _ = im.cmap(im.norm(v))
        dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
        ax.text(
            h,
            l,
            fmt.format(v),
            ha="center",
            va="center",
            fontsize=size,
            color="white" if dark else "black",
        )


def outline_heads(
    ax, heads: Iterable[tuple[int, int]], label: str, *, ec: str = "black", ls: str = "-"
) -> None:
    """Outline `heads` (`(layer, head)`) on a heatmap drawn by `head_heatmap`, with one legend
    entry `label` (none when `heads` is empty). A white halo keeps the outline visible on any
    colour."""
    halo = [patheffects.withStroke(linewidth=4.5, foreground="white")]
    for i, (layer, head) in enumerate(heads):
        ax.add_patch(
            Rectangle(
                (head - 0.46, layer - 0.46),
                0.92,
                0.92,
                fill=False,
                ec=ec,
                ls=ls,
                lw=2,
                path_effects=halo,
                label=label if i == 0 else "_nolegend_",
            )
        )


# ---------------------------------------------------------------------------- trajectories
def step_axis(ax, steps: Sequence[float] | None = None, label: str = "training step") -> None:
    """A log-like x axis over training steps that keeps step 0: symlog, linear below the first
    non-zero step (`steps`, default: the x data of the lines on `ax`)."""
    if steps is None:
        steps = [x for line in ax.get_lines() for x in np.asarray(line.get_xdata(), dtype=float)]
    positive = [float(s) for s in steps if s > 0]
    ax.set_xscale("symlog", linthresh=min(positive) if positive else 1.0)
    ax.set_xlabel(label)
    ax.grid(True, alpha=0.25, which="both")


def shade_window(ax, start: float, end: float, label: str = "phase change") -> None:
    """Shade the steps `start`..`end` on `ax`, with a legend entry `label`."""
    ax.axvspan(start, end, color=WINDOW_COLOUR, alpha=0.3, lw=0, label=label, zorder=0)


def below_axes_legend(ax, **kwargs) -> None:
    """The legend of `ax` under its x label (constrained layout makes room for it)."""
    from matplotlib.transforms import ScaledTranslation

    below = ax.transAxes + ScaledTranslation(0, -0.45, ax.figure.dpi_scale_trans)
    kwargs = {"loc": "upper center", "frameon": False, **kwargs}
    legend(ax, bbox_to_anchor=(0.5, 0.0), bbox_transform=below, **kwargs)


def figure_legend(fig, **kwargs) -> None:
    """One legend under all panels of `fig`, each label once (none if nothing is labelled)."""
    entries = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    if entries:
        kwargs = {"loc": "outside lower center", "fontsize": 8, "frameon": False, **kwargs}
        kwargs.setdefault("ncol", min(len(entries), 3))
        fig.legend(list(entries.values()), list(entries), **kwargs)


def legend(ax, **kwargs) -> None:
    """A legend of the labelled artists on `ax` (none if there are none)."""
    if ax.get_legend_handles_labels()[0]:
        kwargs.setdefault("fontsize", 8)
        ax.legend(**kwargs)


def head_colours(labels: Sequence[str]) -> dict[str, tuple]:
    """One colour per head label, stable across panels (pass the labels layer-major)."""
    cmap = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {lab: cmap(i % cmap.N) for i, lab in enumerate(labels)}


def step_norm(steps: Sequence[float]) -> SymLogNorm:
    """A log-like colour normaliser over training `steps` (step 0 kept), for `STEP_CMAP`."""
    positive = [s for s in steps if s > 0] or [1]
    return SymLogNorm(linthresh=min(positive), vmin=min(steps), vmax=max(max(steps), 1))
