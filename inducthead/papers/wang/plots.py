"""The headline figure: (a) the loss split into its 4-gram and induction parts (relative
errors) for the main run, (b) the six scalars, (c) the same split on the standard transformer
with detect's prefix-matching score, (d) plateau length against the init scale, (e) against
alpha*, (f) the standard transformer's phase steps per seed."""

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
    from inducthead import plotstyle

    m, c = result.metrics, result.curves
    fig, ax = plotstyle.new_figure(2, 3, figsize=kwargs.pop("figsize", (15, 7.5)), **kwargs)
    a = ax[0, 0]
    a.plot(c["step"], c["e4"], label="4-gram part (relative error)")
    a.plot(c["step"], c["eih"], label="induction part (relative error)")
    for key, style, what in (
        ("fourgram_learned_step", ":", "4-gram part learned"),
        ("induction_emergence_step", "--", "induction part falls"),
    ):
        if np.isfinite(m[key]):
            a.axvline(m[key], color="k", ls=style, lw=0.8, label=f"{what} (step {m[key]:.0f})")
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
    if "standard" in c:
        _standard_split(ax[0, 2], c["standard"])
        _standard_steps(ax[1, 2], m["standard"])
    else:
        for a in ax[:, 2]:
            a.axis("off")
    _scatter(ax[1, 0], m["plateau_vs_init"], "sigma", True)
    ax[1, 0].set_title("(d) plateau vs init scale", fontsize=10)
    _scatter(ax[1, 1], m["plateau_vs_alpha"], "alpha", False)
    ax[1, 1].set_title("(e) plateau vs alpha*", fontsize=10)
    fig.suptitle(f"Wang et al. 2024 reproduction ({result.mode}): {result!r}", fontsize=9)
    return fig


def _standard_split(a, c) -> None:
    steps = np.array(c["steps"], float)
    for key, label in (("fourgram_excess", "4-gram part"), ("induction_excess", "induction part")):
        v = np.array(c[key], float)
        a.plot(steps, v / v[0], label=f"{label} (excess CE / step 0)")
    a.plot(steps, c["prefix_matching"], "k--", lw=1, label="detect: best L1 prefix matching")
    a.set_title("(c) standard transformer, token version (seed 0)", fontsize=10)
    a.set_xlabel("step")
    a.set_ylim(0, 1.45)  # room for the legend above the curves
    a.legend(fontsize=7, loc="upper right")


def _standard_steps(a, runs) -> None:
    marks = (
        ("fourgram_learned_step", "4-gram part learned", "o"),
        ("induction_emergence_step", "induction part falls", "s"),
        ("head_emergence_step", "prefix matching >= 0.3", "x"),
    )
    for key, label, marker in marks:
        a.scatter([r[key] for r in runs], [r["seed"] for r in runs], marker=marker, label=label)
    a.set_xlabel("step")
    a.set_ylabel("seed")
    a.set_yticks([r["seed"] for r in runs])
    a.set_title("(f) standard transformer: phase steps per seed", fontsize=10)
    a.legend(fontsize=8)
