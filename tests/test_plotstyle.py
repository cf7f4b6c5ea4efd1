"""The one figure style (`inducthead.plotstyle`) and the plots built on it."""

from __future__ import annotations

import math

import matplotlib.figure
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.patches import Rectangle

from inducthead import plotstyle


@pytest.fixture
def no_new_pyplot_figures():
    """Every figure made in the test stays out of pyplot's registry."""
    before = plt.get_fignums()
    yield
    assert plt.get_fignums() == before


def _ax():
    fig, axes = plotstyle.new_figure()
    return axes[0, 0]


def _scale(im) -> tuple[str, float, float]:
    return im.get_cmap().name, im.norm.vmin, im.norm.vmax


def _outlined(ax) -> list[tuple[int, int]]:
    """(layer, head) of the outline rectangles on a heatmap."""
    return sorted(
        (round(p.get_y() + p.get_height() / 2), round(p.get_x() + p.get_width() / 2))
        for p in ax.patches
        if isinstance(p, Rectangle)
    )


def _legend_texts(fig) -> list[str]:
    legends = [ax.get_legend() for ax in fig.axes] + list(fig.legends)
    return [t.get_text() for lg in legends if lg is not None for t in lg.get_texts()]


# ---------------------------------------------------------------------------- colour by quantity
@pytest.mark.parametrize("kind", plotstyle.KINDS)
def test_the_colour_map_depends_on_the_quantity_not_on_the_sign_of_the_data(kind):
    positive = np.array([[0.2, 0.4], [0.1, 0.5]])
    mixed = np.array([[-0.2, 0.4], [0.1, -0.5]])
    a = plotstyle.head_heatmap(_ax(), positive, kind)
    b = plotstyle.head_heatmap(_ax(), mixed, kind)
    assert a.get_cmap().name == b.get_cmap().name
    expected = {"score": "viridis", "signed": "RdBu_r", "effect": "RdBu_r"}[kind]
    assert a.get_cmap().name.startswith(expected)
    if kind != "effect":  # fixed limits: the same score looks the same in every model
        assert _scale(a) == _scale(b) == (a.get_cmap().name, *plotstyle.colour_scale(kind)[1:])
    else:  # both grids reach |0.5|: the same symmetric limits
        assert _scale(a)[1:] == _scale(b)[1:] == (-0.5, 0.5)


def test_effect_limits_are_symmetric_and_scaled_to_the_data():
    small = np.array([[0.05, -0.01], [math.nan, 0.02]])  # a 0.05-nat effect fills the scale
    assert plotstyle.colour_scale("effect", small) == ("RdBu_r", -0.05, 0.05)
    assert plotstyle.colour_scale("effect", -small * 100) == ("RdBu_r", -5.0, 5.0)
    assert plotstyle.colour_scale("effect", np.zeros((2, 2)))[1:] == (-1.0, 1.0)
    assert plotstyle.colour_scale("effect", [math.nan])[1:] == (-1.0, 1.0)
    assert plotstyle.colour_scale("score", small) == ("viridis", 0.0, 1.0)  # data ignored
    with pytest.raises(ValueError, match="kind must be one of"):
        plotstyle.colour_scale("sequential")


def test_cell_formats():
    assert plotstyle.cell_format("score", 1.0).format(0.954) == "0.95"
    effect = plotstyle.cell_format("effect", 4.43)
    assert [effect.format(v) for v in (4.434, -0.08)] == ["+4.43", "-0.08"]
    assert plotstyle.cell_format("effect", 0.0279).format(-0.0279) == "-0.0279"
    assert plotstyle.cell_format("effect", 2e-5).format(2e-5) == "+2.00e-05"


# ---------------------------------------------------------------------------- head heatmaps
def test_small_grids_carry_their_values_in_the_cells(no_new_pyplot_figures):
    ax = _ax()
    grid = np.array([[0.002, 0.03], [0.951, math.nan]])
    plotstyle.head_heatmap(ax, grid, "score")
    cells = {
        (round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts
    }
    assert cells == {(0, 0): "0.00", (0, 1): "0.03", (1, 0): "0.95"}  # NaN left blank
    assert ax.get_xlabel() == "Head" and ax.get_ylabel() == "Layer"
    assert list(ax.get_xticks()) == [0, 1] and list(ax.get_yticks()) == [0, 1]
    dark, light = (t for t in ax.texts if t.get_text() in ("0.00", "0.95"))
    assert dark.get_color() == "white" and light.get_color() == "black"  # readable on the colour


def test_large_grids_have_no_values_in_cells_unless_asked():
    grid = np.random.default_rng(0).random((12, 12))
    ax = _ax()
    plotstyle.head_heatmap(ax, grid)
    assert len(ax.texts) == 0
    ax = _ax()
    plotstyle.head_heatmap(ax, grid, values_in_cells=True)
    assert len(ax.texts) == 144


def test_outlined_heads_get_a_legend_entry_naming_the_outline(no_new_pyplot_figures):
    ax = _ax()
    plotstyle.head_heatmap(
        ax, np.zeros((2, 3)), highlight=[(1, 2), (0, 1)], highlight_label="induction head: L1H2"
    )
    assert _outlined(ax) == [(0, 1), (1, 2)]
    assert _legend_texts(ax.figure) == ["induction head: L1H2"]
    ax = _ax()  # two groups: solid and dashed outlines, an entry each
    plotstyle.head_heatmap(ax, np.zeros((2, 2)), highlight={"a": [(1, 0)], "b": [(0, 0)]})
    styles = {p.get_label(): p.get_linestyle() for p in ax.patches}
    assert styles == {"a": "-", "b": "--"}
    assert _legend_texts(ax.figure) == ["a", "b"]
    ax = _ax()  # nothing outlined: no legend
    plotstyle.head_heatmap(ax, np.zeros((2, 2)), highlight=[], highlight_label="confirmed")
    assert len(ax.patches) == 0 and ax.get_legend() is None


def test_bad_grids():
    with pytest.raises(ValueError, match=r"\[n_layers, n_heads\] grid, got shape \(4,\)"):
        plotstyle.head_heatmap(_ax(), np.zeros(4))
    with pytest.raises(ValueError, match="at most 2 highlight groups"):
        plotstyle.head_heatmap(_ax(), np.zeros((2, 2)), highlight={"a": [], "b": [], "c": []})
    with pytest.raises(ValueError, match="at least one row"):
        plotstyle.new_figure(0, 1)


# ---------------------------------------------------------------------------- figures
def test_figures_are_not_registered_with_pyplot_and_render_as_png(tmp_path):
    before = plt.get_fignums()
    fig, axes = plotstyle.new_figure(2, 3, dpi=50)
    assert isinstance(fig, matplotlib.figure.Figure) and axes.shape == (2, 3)
    assert fig.get_size_inches().tolist() == [5.2 * 3, 3.4 * 2]
    axes[0, 0].plot([0, 1])
    assert plt.get_fignums() == before
    assert fig._repr_png_().startswith(b"\x89PNG")  # what IPython displays, once
    fig.savefig(tmp_path / "f.png")
    assert (tmp_path / "f.png").read_bytes().startswith(b"\x89PNG")
    assert plotstyle.Figure()._repr_png_() is None  # nothing drawn: nothing shown
    fig, flat = plotstyle.panel_grid(4, max_cols=3)
    assert len(flat) == 4 and len(fig.axes) == 6 and not fig.axes[5].axison


def test_step_axis_is_log_like_and_keeps_step_zero():
    ax = _ax()
    ax.plot([0, 25, 50, 800], [4.8, 4.3, 4.2, 0.2])
    plotstyle.step_axis(ax)
    assert ax.get_xscale() == "symlog" and ax.get_xlabel() == "training step"
    assert ax.xaxis.get_transform().linthresh == 25  # linear below the first non-zero step
    x0, x25, x800 = ax.transData.transform([(0, 0), (25, 0), (800, 0)])[:, 0]
    assert x0 < x25 < x800 and np.isfinite(x0)
    plotstyle.shade_window(ax, 225, 250)
    plotstyle.legend(ax)
    assert _legend_texts(ax.figure) == ["phase change"]


def test_head_colours_and_step_norm():
    colours = plotstyle.head_colours(["L0H0", "L0H1", "L1H0"])
    assert len(set(colours.values())) == 3
    norm = plotstyle.step_norm([0, 10, 100, 1000])
    assert norm(0) == 0 and norm(1000) == 1 and 0 < norm(10) < norm(100) < 1


# ---------------------------------------------------------------------------- the result plots
def _panels(fig) -> dict:
    """Titled axes (the heatmaps; colorbars have no title) by title."""
    return {ax.get_title(): ax for ax in fig.axes if ax.get_title()}


@pytest.fixture(scope="module")
def circuit():
    from inducthead.model import induction_circuit

    return induction_circuit()  # 2 layers x 4 heads, roles known


def test_detect_colours_each_score_the_same_in_every_model(
    demo_model, circuit, no_new_pyplot_figures
):
    import inducthead as ih

    figs = [ih.detect(m).plot() for m in (demo_model, circuit[0])]
    demo, hand = (_panels(f) for f in figs)
    for key, scale in (
        ("prefix_matching", ("viridis", 0.0, 1.0)),
        ("previous_token", ("viridis", 0.0, 1.0)),
        ("copying_empirical", ("RdBu_r", -1.0, 1.0)),
    ):
        assert _scale(demo[key].images[0]) == _scale(hand[key].images[0]) == scale
    # the verdicts are outlined, each kind with its legend entry
    assert _outlined(demo["prefix_matching"]) == [(0, 0), (1, 0), (1, 1)]
    assert _legend_texts(figs[0]) == [
        "induction head: L1H1, L1H0",
        "previous-token head: L0H0",
    ]
    assert len(demo["prefix_matching"].texts) == 4  # a 2x2 grid: values in the cells


def test_ablation_scan_outlines_only_the_heads_that_matter(circuit, no_new_pyplot_figures):
    from inducthead.causal.scan import ablation_scan

    model, roles = circuit
    scan = ablation_scan(model, metric=["loss", "accuracy"])
    panel = _panels(scan.plot())["loss"]
    # the previous-token and induction heads; not the heads whose effect is (near) zero
    assert _outlined(panel) == sorted([roles.previous_token, roles.induction])
    assert scan.notable() == [roles.induction, roles.previous_token]
    assert all(h not in scan.notable() for h in roles.zero)
    top = float(scan.scores["loss"].abs().max())
    assert panel.get_legend() is None  # one legend for the figure, naming each panel's rule
    texts = _legend_texts(panel.figure)
    assert f"loss: |effect| >= 5% of the largest ({top:.3g})" in texts
    assert _scale(panel.images[0])[1:] == (-top, top)
    with pytest.raises(ValueError, match=r"share must be in \(0, 1\]"):
        scan.notable(share=0)


def test_verify_plot_is_scaled_to_its_effects_and_says_when_no_head_is_confirmed(
    demo_model, no_new_pyplot_figures
):
    import inducthead as ih
    from inducthead.causal.data import default_data

    r = ih.verify(demo_model, heads=[], data=default_data(demo_model, n_samples=16))
    fig = r.plot()
    assert "no head confirmed" in fig.get_suptitle()
    for key, ax in _panels(fig).items():
        bound = float(r.scores[key].abs().max())
        assert bound < 1 and _scale(ax.images[0])[1:] == (-bound, bound)
        assert len(ax.patches) == 0  # nothing outlined


def test_head_scores_over_training(no_new_pyplot_figures):
    import pandas as pd

    from inducthead.dynamics.results import HeadScoresResult

    rows = [
        (step, 100 * step, 0.0, 0, 0, "L0H0", metric, value)
        for step, value in ((0, 0.03), (250, 0.5), (800, 0.95))
        for metric in ("prefix_matching", "copying_empirical")
    ]
    cols = ["step", "tokens", "elapsed_s", "layer", "head", "label", "metric", "value"]
    r = HeadScoresResult(
        name="demo",
        metrics=["prefix_matching", "copying_empirical"],
        window={"start": 225, "end": 250},
        data=pd.DataFrame(rows, columns=cols),
    )
    fig = r.plot()
    pm, cp = _panels(fig)["prefix_matching"], _panels(fig)["copying_empirical"]
    assert pm.get_xscale() == "symlog" and pm.get_ylim() == (-0.03, 1.03)
    assert cp.get_ylim() == (-1.05, 1.05)  # a [-1, 1] score: its fixed range
    assert _legend_texts(fig) == ["L0H0", "phase change"]


def test_sweep_plot_marks_emerged_missing_and_failed_cells(tmp_path, no_new_pyplot_figures):
    from inducthead.sweep.driver import SweepResult

    rows = [
        {"cell": "a", "status": "done", "final_step": 800, "emergence_step": 250,
         "best_prefix_matching": 0.95},
        {"cell": "b", "status": "done", "final_step": 800, "emergence_step": None,
         "best_prefix_matching": 0.1},
        {"cell": "c", "status": "failed", "final_step": None, "emergence_step": None},
    ]  # fmt: skip
    fig = SweepResult(tmp_path, rows).plot()
    steps, scores = fig.axes[:2]
    assert [p.get_width() for p in steps.patches] == [250, 0, 0, 0, 800, 0]
    assert [t.get_text() for t in steps.texts] == [" failed"]
    assert _legend_texts(fig) == ["emergence step", "no emergence by the final step"]
    assert scores.get_xlim() == (0, 1)
    assert [round(p.get_width(), 2) for p in scores.patches] == [0.95, 0.1, 0]


def test_patch_plot_labels_bars_and_recovery(no_new_pyplot_figures):
    from inducthead.causal.patching import PatchResult

    r = PatchResult("L1H0 z", {"loss": 0.2}, {"loss": 1.2}, {"loss": 0.7})
    (ax,) = r.plot().axes
    assert ax.get_title() == "loss (50% recovered)"
    assert [t.get_text() for t in ax.texts] == ["0.2", "1.2", "0.7"]


# ---------------------------------------------------------------------------- Run.plot
def _lines(ax) -> dict:
    return {line.get_label(): line for line in ax.get_lines()}


def test_run_plot_draws_the_recorded_curves_on_a_log_step_axis(no_new_pyplot_figures):
    from conftest import ASSETS

    import inducthead as ih

    run = ih.Run(ASSETS / "demo")
    rows = run.rows()
    fig = run.plot()
    panels = _panels(fig)
    assert list(panels) == ["Loss", "Best head scores"]  # the demo records no ICL score
    loss, scores = _lines(panels["Loss"]), _lines(panels["Best head scores"])
    assert list(loss) == ["train loss", "eval loss"]
    assert list(scores) == ["best prefix matching", "best previous token"]
    eval_steps = [r["step"] for r in rows]
    assert list(loss["eval loss"].get_xdata()) == eval_steps
    assert list(loss["eval loss"].get_ydata()) == [r["eval_loss"] for r in rows]
    assert 0 not in loss["train loss"].get_xdata()  # step 0 has no training loss (null)
    assert list(scores["best prefix matching"].get_ydata()) == [
        r["best_prefix_matching"] for r in rows
    ]
    for ax in panels.values():
        assert ax.get_xscale() == "symlog" and ax.get_xlabel() == "training step"
        assert ax.get_legend() is not None
    assert panels["Best head scores"].get_ylim() == (-0.03, 1.03)


def test_run_plot_adds_the_icl_score_when_recorded_and_refuses_an_empty_run(
    no_new_pyplot_figures,
):
    from conftest import ASSETS

    import inducthead as ih
    from inducthead.runs.run import RunDirError

    demo = ih.Run(ASSETS / "demo")
    rows = [dict(r, icl_score=-0.1 * i) for i, r in enumerate(demo.rows())]
    run = ih.Run.in_memory(demo.meta, rows, model=None)
    panels = _panels(run.plot())
    assert list(panels) == ["Loss", "ICL score", "Best head scores"]
    assert list(_lines(panels["ICL score"])["ICL score"].get_ydata()) == [
        r["icl_score"] for r in rows
    ]
    with pytest.raises(RunDirError, match="no metrics rows yet"):
        ih.Run.in_memory(demo.meta, [], model=None).plot()
