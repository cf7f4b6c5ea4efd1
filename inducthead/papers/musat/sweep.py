"""The N sweep: emergence time against context length, batched (seeds and N values in one
coordinate-flow computation, `flow.coordinate_flow`), with both emergence definitions and both
dimension conventions (`emergence`)."""

from __future__ import annotations

import math

import numpy as np

from inducthead.papers.musat import emergence, flow, gram
from inducthead.papers.musat.subspace import NAMES

# seeds perturb the zero init by 1e-3 N(0, 1) per coordinate so that they differ (0 is the
# paper's init; at 1e-3 the loss-midpoint times move by < 0.5% from it, see tests)
SEED_JITTER = 1e-3


def run(
    n_values: list[int],
    seeds: list[int],
    group: str = "all",
    dt: float = 1.0,
    device="cpu",
    progress: bool = True,
) -> tuple[dict, list[flow.FlowHistory]]:
    """Train every (N, seed) cell; `group` "all" (one batched computation, left-padded to the
    largest N) or "per_n" (one batched computation per N: no padding, for large N) or "cell"
    (one cell at a time: the benchmark's baseline). Returns (table, histories)."""
    if group not in ("all", "per_n", "cell"):
        raise ValueError(f"group must be 'all', 'per_n' or 'cell', got {group!r}.")
    cells = [(int(n), int(s)) for n in n_values for s in seeds]
    if group == "all":
        chunks = [cells]
    elif group == "per_n":
        chunks = [[c for c in cells if c[0] == n] for n in n_values]
    else:
        chunks = [[c] for c in cells]
    rows, hists = [], []
    for chunk in chunks:
        h = flow.coordinate_flow(
            [n for n, _ in chunk],
            [s for _, s in chunk],
            dt=dt,
            init_std=SEED_JITTER,
            device=device,
            progress=progress,
        )
        hists.append(h)
        for i, (n, s) in enumerate(chunk):
            rows.append({"n_pairs": n, "seed": s, **cell_times(h, i)})
    return {"rows": rows}, hists


def cell_times(h: flow.FlowHistory, i: int) -> dict:
    """Emergence times of cell i (coordinate time): loss midpoint, the three coordinates at
    half their final value, gamma3's early phase (half its plateau optimum, `gram.plateau`)."""
    loss, coords = h.loss[:, i], h.coords[:, i]
    stop = h.plateau[i] * 0.05
    end = int(np.argmax(loss <= stop)) if (loss <= stop).any() else len(loss) - 1
    t, L, C = h.time[: end + 1], loss[: end + 1], coords[: end + 1]
    times = emergence.coordinate_times(t, C)
    g3 = gram.plateau(h.n_pairs[i])[1][2].item()
    early = emergence._crossing(t, C[:, NAMES.index("gamma3")], g3 / 2, "up")
    return {
        "loss": emergence.loss_time(t, L, h.plateau[i]),
        **times,
        "coordinate": max(times.values()),
        "gamma3_early": early,
        "final_loss": float(L[-1]),
    }


def fits(rows: list[dict]) -> dict:
    """`{definition: {convention: loglog_fit}}` plus gamma3's early phase at fixed D."""
    n = np.array([r["n_pairs"] for r in rows], float)
    out: dict = {}
    for d in emergence.DEFINITIONS:
        t = np.array([r[d] for r in rows], float)
        out[d] = {
            "fixed_D": emergence.loglog_fit(n, t),
            "D_2N+2": emergence.loglog_fit(n, t * (2 * n + 2)),
        }
    t = np.array([r["gamma3_early"] for r in rows], float)
    out["gamma3_early"] = {"fixed_D": emergence.loglog_fit(n, t)}
    return out


def finite(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x
