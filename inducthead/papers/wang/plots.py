"""The headline figure: (a) the loss split into its 4-gram and induction parts (relative
errors) for the main run, (b) the six scalars, (c) plateau length against the init scale,
(d) against alpha*."""

from __future__ import annotations

import numpy as np


def _scatter(ax, rows, key, log: bool):
    x = np.array([r[key] for r in rows], float)
    y = np.array([r["plateau_steps"] for r in rows], float)
    ax.scatter(x, y, s=18)
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(key if key != "alpha" else "alpha*")
    ax.set_ylabel("plateau (steps)")


def figure(result, **kwargs):
    import matplotlib.pyplot as plt

    m, c = result.metrics, result.curves
    fig, ax = plt.subplots(2, 2, figsize=kwargs.pop("figsize", (11, 7.5)), **kwargs)
    a = ax[0, 0]
    a.plot(c["step"], c["e4"], label="4-gram part (relative error)")
    a.plot(c["step"], c["eih"], label="induction part (relative error)")
    for key, style in (("fourgram_learned_step", ":"), ("induction_emergence_step", "--")):
        if np.isfinite(m[key]):
            a.axvline(m[key], color="k", ls=style, lw=0.8)
    a.set_title(
        f"(a) loss parts, alpha* {m['main']['alpha']}, sigma {m['main']['sigma']:g}", fontsize=10
    )
    a.set_xlabel("step")
    a.legend(fontsize=8)
    b = ax[0, 1]
    for p, v in c["theta"].items():
        b.plot(c["step"], v, label=p)
    b.set_title("(b) the six scalars", fontsize=10)
    b.set_xlabel("step")
    b.legend(fontsize=8)
    _scatter(ax[1, 0], m["plateau_vs_init"], "sigma", True)
    ax[1, 0].set_title("(c) plateau vs init scale", fontsize=10)
    _scatter(ax[1, 1], m["plateau_vs_alpha"], "alpha", False)
    ax[1, 1].set_title("(d) plateau vs alpha*", fontsize=10)
    fig.suptitle(f"Wang et al. 2024 reproduction ({result.mode}): {result!r}", fontsize=9)
    fig.tight_layout()
    return fig
