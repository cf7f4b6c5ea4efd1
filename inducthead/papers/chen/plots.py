"""The headline figure of `reproduce`: (a) p_S over joint training (S* = "110" bold), (b) each
layer-1 head's attention on its own lag (joint solid, staged dashed), (c) the classifier scale
a, (d) validation NLL of every run against the in-context Bayes estimator's."""

from __future__ import annotations

import numpy as np


def figure(result, **kwargs):
    from inducthead import plotstyle

    m, c = result.metrics, result.curves
    fig, ax = plotstyle.new_figure(2, 2, figsize=kwargs.pop("figsize", (11, 7.5)), **kwargs)
    j = c.get("joint", {})
    a = ax[0, 0]
    for code, v in j.get("p_S", {}).items():
        a.plot(j["step"], v, lw=2.4 if code == "110" else 0.9, label=code)
    a.set_title("(a) selector weights p_S (joint); S* = 110", fontsize=10)
    a.set_xlabel("step")
    a.legend(fontsize=7, ncol=2)
    b = ax[0, 1]
    for name, style in (("joint", "-"), ("staged", "--")):
        r = c.get(name)
        if not r:
            continue
        own = np.array(r["own_lag"])
        for h in range(own.shape[1]):
            b.plot(r["step"], own[:, h], style, color=f"C{h}", label=f"head {h + 1} ({name})")
    b.set_title("(b) layer-1 attention on the head's own lag", fontsize=10)
    b.set_xlabel("step")
    b.legend(fontsize=7)
    d = ax[1, 0]
    for name in ("joint", "staged", "full_model"):
        r = c.get(name)
        if r:
            d.plot(r["step"], r["a"], label=name)
    d.set_title("(c) classifier scale a", fontsize=10)
    d.set_xlabel("step")
    d.legend(fontsize=8)
    e = ax[1, 1]
    for name in ("joint", "staged", "full_model"):
        r = c.get(name)
        if r:
            e.plot(r["step"], r["val_loss"], label=name)
    e.axhline(m["bayes_loss"], color="k", ls=":", label=f"Bayes {m['bayes_loss']:.3f}")
    e.set_title("(d) validation NLL vs the in-context Bayes estimator", fontsize=10)
    e.set_xlabel("step")
    e.legend(fontsize=8)
    fig.suptitle(f"Chen et al. 2024 reproduction ({result.mode}): {result!r}", fontsize=9)
    return fig
