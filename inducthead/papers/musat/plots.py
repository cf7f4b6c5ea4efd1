"""The headline figure of `reproduce`: (a) the 19 coordinates over training at the largest N,
(b) loss against time for every N, (c) emergence time vs N on log-log axes with the fits under
both dimension conventions and the attention event under MSE and cross-entropy, (d) the
standard transformer's progress measures and loss."""

from __future__ import annotations

import numpy as np

from inducthead.papers.musat.subspace import HEADLINE, NAMES


def figure(result, **kwargs):
    from inducthead import plotstyle

    m, c = result.metrics, result.curves
    fig, ax = plotstyle.new_figure(2, 2, figsize=kwargs.pop("figsize", (11, 7.5)), **kwargs)
    a = ax[0, 0]
    co = c.get("coords", {})
    for n in NAMES:
        if n in co:
            a.plot(
                co["time"],
                co[n],
                lw=2.2 if n in HEADLINE else 0.7,
                alpha=1 if n in HEADLINE else 0.45,
                label=n if n in HEADLINE else None,
            )
    a.set_title(f"(a) the 19 coordinates, N = {m['reference_n']}", fontsize=10)
    a.set_xlabel("coordinate time tau")
    a.legend(fontsize=8)
    b = ax[0, 1]
    for n, d in c.get("sweep", {}).items():
        b.plot(d["time"], d["loss"], label=f"N={n}")
    b.set_xscale("log")
    b.set_title("(b) population loss", fontsize=10)
    b.set_xlabel("coordinate time tau")
    b.legend(fontsize=7, ncol=2)
    d = ax[1, 0]
    rows = m["sweep_rows"]
    n = np.array([r["n_pairs"] for r in rows], float)
    for key, conv, mark in (
        ("loss", "fixed_D", "o"),
        ("loss", "D_2N+2", "s"),
        ("coordinate", "fixed_D", "^"),
    ):
        f = m["emergence_slopes"][key][conv]
        t = np.array([r[key] for r in rows], float) * ((2 * n + 2) if conv == "D_2N+2" else 1)
        d.scatter(n, t, marker=mark, s=14, label=f"{key}, {conv}: slope {f['slope']:.2f}")
        xs = np.array(f["n"])
        d.plot(xs, np.exp(f["intercept"]) * xs ** f["slope"], lw=0.8)
    obj = m.get("objective_times")
    if obj:  # the induction head's attention event under each loss (claim "ce_delay")
        for key, mark in (("mse", "x"), ("ce", "+")):
            d.scatter(obj["n_values"], obj[key], marker=mark, s=30, label=f"attention, {key}")
    xs = np.array(sorted(set(n)))
    d.plot(xs, 40 * xs**2 / xs[0] ** 2, "k--", lw=0.8, label="slope 2 (the paper's law)")
    d.set_xscale("log")
    d.set_yscale("log")
    d.set_xlabel("N (item-label pairs)")
    d.set_ylabel("emergence time")
    d.set_title("(c) emergence time vs context length", fontsize=10)
    d.legend(fontsize=7)
    e = ax[1, 1]
    for meas, s in c.get("standard", {}).items():
        v = np.array(s["value"], float)
        e.plot(s["step"], v / max(np.nanmax(np.abs(v)), 1e-12), label=meas)
    lo = c.get("standard_loss")
    if lo:
        L = np.array(lo["loss"], float)
        e.plot(lo["step"], L / L[0], "k:", label="loss / initial")
    e.set_xlim(0, 200)
    e.set_title("(d) standard transformer: progress measures (scaled)", fontsize=10)
    e.set_xlabel("step")
    e.legend(fontsize=8)
    fig.suptitle(f"Musat et al. 2025 reproduction ({result.mode}): {result!r}", fontsize=9)
    return fig
