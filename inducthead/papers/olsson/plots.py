"""The headline figure of `reproduce` (Olsson et al. 2022, Argument 1-3 on our runs): (a) the
band ICL score, (b) the best prefix-matching score, (c) the loss gap to the 1-layer run, each
over log steps with every run's phase-change window shaded; (d) the joint per-token-loss PCA
(PC1, PC2) with the pivot windows bold; (e) the ICL score at the end with the induction heads
ablated and with the same-layer control; (f) each head's attribution to the before-and-after
vector."""

from __future__ import annotations

import numpy as np

from inducthead.papers.olsson.claims import LABELS


def _shade(ax, runs, color_of) -> None:
    """Each run's ICL window in the run's colour (only runs with induction heads)."""
    for k, r in runs.items():
        w = r.get("window")
        if w and r["induction_heads"]:
            ax.axvspan(w["start"], w["end"], color=color_of[k], alpha=0.12, lw=0)


def figure(result, **kwargs):
    from inducthead import plotstyle

    m, c = result.metrics, result.curves
    runs = m["runs"]
    color_of = {k: f"C{i}" for i, k in enumerate(runs)}
    fig, ax = plotstyle.new_figure(2, 3, **kwargs)
    for a, key, title in (
        (ax[0, 0], "icl_score", "(a) ICL score (late - early loss, nats)"),
        (ax[0, 1], "best_prefix_matching", "(b) best prefix-matching score"),
    ):
        for k in runs:
            a.plot(c[k]["steps"], c[k][key], "o-", ms=3, color=color_of[k], label=LABELS[k])
        _shade(a, runs, color_of)
        plotstyle.step_axis(a, label="step (shaded: ICL window of runs with induction heads)")
        a.set_title(title, fontsize=10)
    ax[0, 0].axhline(-0.4, color="k", ls=":", lw=0.8, label="paper: ~-0.4 after")
    ax[0, 1].axhline(0.3, color="k", ls=":", lw=0.8, label="detect threshold 0.3")
    for a in ax[0, :2]:
        plotstyle.legend(a, fontsize=7)
    g = ax[0, 2]
    for k, r in runs.items():
        if "loss_gap" in r:
            steps = r["steps"][: len(r["loss_gap"])]
            g.plot(steps, r["loss_gap"], "o-", ms=3, color=color_of[k], label=LABELS[k])
    _shade(g, runs, color_of)
    plotstyle.step_axis(g, label="step")
    g.set_title("(c) loss minus the 1-layer run's (nats)", fontsize=10)
    plotstyle.legend(g, fontsize=7)
    _pca(ax[1, 0], runs, c, color_of, m.get("pca_explained_variance_ratio", []))
    _ablation(ax[1, 1], runs)
    _attribution(ax[1, 2], runs)
    return plotstyle.finish(fig, f"Olsson et al. 2022 reproduction ({result.mode}): {result!r}")


def _pca(a, runs, c, color_of, evr) -> None:
    for k, r in runs.items():
        pc1, pc2 = np.asarray(c[k]["pca"]["pc1"]), np.asarray(c[k]["pca"]["pc2"])
        a.plot(pc1, pc2, "o-", ms=2.5, lw=0.8, color=color_of[k], label=LABELS[k])
        w = r.get("pca_pivot")
        if w and r["induction_heads"]:
            i0, i1 = r["steps"].index(w["start"]), r["steps"].index(w["end"])
            a.plot(pc1[i0 : i1 + 1], pc2[i0 : i1 + 1], lw=3, color=color_of[k])
    first = c[next(iter(runs))]["pca"]
    a.annotate("step 0", (first["pc1"][0], first["pc2"][0]), fontsize=7)
    ratio = ", ".join(f"{v:.2f}" for v in evr[:2])
    a.set_xlabel("PC1")
    a.set_ylabel("PC2")
    a.set_title(f"(d) per-token-loss PCA, joint (explained {ratio}); bold: pivot", fontsize=10)
    a.legend(fontsize=7)


def _ablation(a, runs) -> None:
    done = [k for k, r in runs.items() if "icl_ablated" in r]
    if not done:
        _empty(a, "(e) pattern-preserving ablation", "no run with induction heads")
        return
    x = np.arange(len(done))
    full = [runs[k]["icl_final"] for k in done]
    ablated = [runs[k]["icl_ablated"] for k in done]
    control = [
        runs[k]["icl_final"] * (1 - runs[k].get("icl_removed_by_control", np.nan)) for k in done
    ]
    a.bar(x - 0.27, full, 0.27, label="model", color="0.5")
    a.bar(x, ablated, 0.27, label="induction heads ablated", color="C3")
    a.bar(x + 0.27, control, 0.27, label="same-layer control ablated", color="C0")
    a.set_xticks(x, [LABELS[k] for k in done])
    a.axhline(0, color="k", lw=0.6)
    a.set_ylabel("ICL score at the end (nats)")
    a.set_title("(e) pattern-preserving ablation", fontsize=10)
    a.legend(fontsize=7)


def _attribution(a, runs) -> None:
    done = [k for k, r in runs.items() if r.get("attribution")]
    if not done:
        _empty(a, "(f) before-and-after attribution", "no run with a phase change")
        return
    labels = sorted({h for k in done for h in runs[k]["attribution"]})
    grid = np.full((len(done), len(labels)), np.nan)
    for i, k in enumerate(done):
        for j, h in enumerate(labels):
            grid[i, j] = runs[k]["attribution"].get(h, np.nan)
    from inducthead import plotstyle

    # a share of the ICL change: signed and data-scaled ("effect"), the same map as other effects
    scale = plotstyle.colour_scale("effect", grid)
    im = a.imshow(grid, cmap=scale.cmap, vmin=scale.vmin, vmax=scale.vmax, aspect="auto")
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            if np.isfinite(grid[i, j]):
                a.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=6)
    a.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    a.set_yticks(range(len(done)), [LABELS[k] for k in done], fontsize=8)
    a.set_title("(f) share of the phase change undone by ablating each head", fontsize=10)
    a.figure.colorbar(im, ax=a, fraction=0.04)


def _empty(a, title: str, why: str) -> None:
    a.set_title(title, fontsize=10)
    a.text(0.5, 0.5, why, ha="center", va="center", transform=a.transAxes)
    a.set_axis_off()
