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
    backend: str = "local",
    ray_address: str | None = None,
) -> tuple[dict, list[flow.FlowHistory]]:
    """Train every (N, seed) cell; `group` "all" (one batched computation, left-padded to the
    largest N) or "per_n" (one batched computation per N: no padding, for large N) or "cell"
    (one cell at a time: the benchmark's baseline). `backend` "local" runs the groups here one
    after another, "ray" runs each as a Ray task (a local cluster, or the one at
    `ray_address`), one CPU each. Returns (table, histories)."""
    if group not in ("all", "per_n", "cell"):
        raise ValueError(f"group must be 'all', 'per_n' or 'cell', got {group!r}.")
    if backend not in ("local", "ray"):
        raise ValueError(f"backend must be 'local' or 'ray', got {backend!r}.")
    cells = [(int(n), int(s)) for n in n_values for s in seeds]
    if group == "all":
        chunks = [cells]
    elif group == "per_n":
        chunks = [[c for c in cells if c[0] == n] for n in n_values]
    else:
        chunks = [[c] for c in cells]
    args = [([n for n, _ in ch], [s for _, s in ch], dt, device) for ch in chunks]
    if backend == "ray":
        hists = _on_ray(args, ray_address)
    else:
        hists = [_flow(*a, progress=progress) for a in args]
    rows = []
    for chunk, h in zip(chunks, hists, strict=True):
        for i, (n, s) in enumerate(chunk):
            rows.append({"n_pairs": n, "seed": s, **cell_times(h, i)})
    return {"rows": rows}, hists


def _flow(n_pairs, seeds, dt, device, progress=False) -> flow.FlowHistory:
    return flow.coordinate_flow(
        n_pairs, seeds, dt=dt, init_std=SEED_JITTER, device=device, progress=progress
    )


def _on_ray(args: list[tuple], address: str | None) -> list[flow.FlowHistory]:
    """The groups as Ray tasks, largest first (the longest runs start first)."""
    try:
        import ray
    except ImportError:
        raise ImportError(
            "backend='ray' needs Ray: pip install 'inducthead[ray]' (or use backend='local')."
        ) from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(_flow)
        order = sorted(range(len(args)), key=lambda i: -max(args[i][0]))
        refs = {i: task.remote(*args[i]) for i in order}
        return [ray.get(refs[i]) for i in range(len(args))]
    finally:
        if started:
            ray.shutdown()


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


def objective_times(
    n_values: list[int], seed: int = 0, device="cpu", progress=True, max_time: float = 2e4
) -> dict:
    """Induction-head emergence under both objectives (`gram.forward`), each N one cell of one
    batched flow per objective: `{"n_values", "mse", "ce" (times: layer 2's attention on the
    queried label first >= 1/2, the same mechanism event under both losses), "ratio"
    (ce / mse per N)}`. Both flows run until that attention reaches 0.6 or `max_time` (NaN
    then: MSE sharpens the attention slowly; N = 16 needs 844, N = 64 ran past 30 min)."""
    out: dict = {"n_values": [int(n) for n in n_values]}
    for objective in gram.OBJECTIVES:
        h = flow.coordinate_flow(
            list(n_values),
            [seed] * len(n_values),
            init_std=SEED_JITTER,
            device=device,
            progress=progress,
            objective=objective,
            stop_on="attention",
            stop_fraction=0.4,  # until 0.6: just past the event (MSE is slow to sharpen)
            max_time=max_time,
        )
        out[objective] = [
            emergence._crossing(h.time, h.attention[:, i], 0.5, "up") for i in range(len(n_values))
        ]
    out["ratio"] = [c / m for c, m in zip(out["ce"], out["mse"], strict=True)]
    return out


def finite(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x
