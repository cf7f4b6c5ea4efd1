"""Olsson et al. 2022's per-token-loss PCA (Argument 1, "Looking at the phase change more
closely"): every checkpoint of every run becomes one vector of per-token losses on the same
held-out tokens, one PCA is fitted jointly over all of them, and the runs that form induction
heads turn ("pivot") in the plane of the first two components during their phase change, while
the 1-layer run keeps its direction.

Our formulation (PROVISIONAL: the paper's token sample and its pivot are read off figures):
- the vector holds every position of every evaluation window (256 x 256 = 65,536 tokens).
  Measured on the shipped runs: one random token per window (256 tokens, the library's
  `Trajectory.per_token_loss_pca`) leaves the components at noise level (explained variance
  0.25 / 0.22 / 0.19 / 0.17), every token gives 0.53 / 0.11 / 0.06 / 0.03;
- PC2's sign is fixed so that step 0 lies below the mean: every run first rises along PC2 (the
  unigram and bigram statistics, common to all runs, shape the first ~100 steps) and reaches
  its maximum there;
- the pivot is where the trajectory turns back down PC2 fastest after that maximum: the
  shipped interval with the fastest fall of PC2 per training step, widened over neighbouring
  intervals that fall at >= half that rate. Per step, not per ln(step) as the ICL window: the
  late checkpoints jitter by +-40 on PC2 (constant lr), which a log-step rate over their short
  log-intervals inflates (measured: it put smeared 1L's pivot at 600-700, PC2 going up).
  Measured (seed 0): 2L 400-600, 3L and smeared 2L as in their ICL windows (500-600, 100-200),
  smeared 1L 100-200 (1.9 per step against <= 0.4 later); the 1-layer run's PC2 drifts at
  <= 0.3 per step.
"""

from __future__ import annotations

import numpy as np

from inducthead.dynamics.pca import data_pca


def joint_pca(losses: dict[str, np.ndarray], n_components: int = 3) -> dict:
    """`losses`: run -> `[checkpoints, ...]` per-token losses on the same tokens. Returns
    `{"coords": run -> [checkpoints, k], "explained_variance_ratio": [k]}`, PC2 oriented as in
    the module docstring."""
    keys = list(losses)
    rows = [np.asarray(losses[k], dtype=np.float64).reshape(len(losses[k]), -1) for k in keys]
    widths = {r.shape[1] for r in rows}
    if len(widths) != 1:
        raise ValueError(f"every run needs losses on the same tokens; got widths {widths}.")
    evr, coords, _ = data_pca(np.concatenate(rows), n_components)
    starts = np.cumsum([0] + [len(r) for r in rows])
    if coords.shape[1] > 1 and np.mean(coords[starts[:-1], 1]) > 0:
        coords[:, 1] *= -1
    return {
        "coords": {k: coords[starts[i] : starts[i + 1]] for i, k in enumerate(keys)},
        "explained_variance_ratio": [float(r) for r in evr],
    }


def pivot(steps, pc2) -> dict | None:
    """The pivot window of one run's oriented PC2 (module docstring): `{"start", "end",
    "peak_start", "peak_end", "peak_rate", "rule"}`; None when PC2 never falls after its
    maximum."""
    steps, pc2 = np.asarray(steps, dtype=float), np.asarray(pc2, dtype=float)
    top = int(np.argmax(pc2))
    fall = -np.diff(pc2[top:]) / np.diff(steps[top:])  # per step, after the maximum
    if len(fall) == 0 or fall.max() <= 0:
        return None
    peak = int(np.argmax(fall))
    lo = hi = peak
    while lo > 0 and fall[lo - 1] >= 0.5 * fall[peak]:
        lo -= 1
    while hi < len(fall) - 1 and fall[hi + 1] >= 0.5 * fall[peak]:
        hi += 1
    at = [int(steps[top + i]) for i in (lo, hi + 1, peak, peak + 1)]
    return {
        "start": at[0],
        "end": at[1],
        "peak_start": at[2],
        "peak_end": at[3],
        "peak_rate": float(fall[peak]),
        "rule": f"PC2 falls at >= 0.5 x its fastest rate per step after its maximum (step "
        f"{int(steps[top])}): {fall[peak]:.3g} per step between steps {at[2]} and {at[3]}",
    }
