"""Gradient flow on the population loss (Musat et al. 2025, Assumption 5: gradient flow from
zero init; explicit Euler steps small enough that halving them moves emergence times by < 1%,
measured below).

- `coordinate_flow`: many cells (N values x seeds) as one batched computation on the
  19 coordinates (`gram`), in coordinate time tau (dc/dtau = -dL/dc). Gradient flow on the
  full matrices at dimension D runs the same path in time t = D tau (`subspace`). Step size:
  dtau = 1 moves the loss-midpoint time by 2% at N = 4 and 0.4% at N = 16 against dtau = 0.25
  (84.25 -> 86.0, 664.5 -> 667.0); dtau = 2 diverges.
- `matrix_flow`: the full W1, W2, W3 of `MinimalInductionModel` trained by autograd, with the
  population `exact` (canonical sequences, gradient projected: the group average, which keeps
  the path in the subspace by Theorem 1's argument), `orbit` (the literal finite population,
  no projection), `sampled` (Haar-random finite batches, no projection) or `fixed` (the
  canonical sequences alone: one-hot positions and tokens, no symmetry; the formulation DESIGN.md
  records leaving the subspace); random init via `init_std` (not with `exact`, whose projection
  is the population gradient only on the subspace). Snapshots of the flattened weights feed
  the span and residual measurements.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from inducthead._progress import progress_bar
from inducthead.papers.musat import data, gram, subspace
from inducthead.papers.musat.model import MinimalInductionModel, mse

POPULATIONS = ("exact", "orbit", "sampled", "fixed")


@dataclass
class FlowHistory:
    """Recorded coordinate flow: `time [R]` (coordinate time), `loss [R, C]`, `coords
    [R, C, 19]`, `attention [R, C]` (layer 2's mean attention on the queried label), per cell
    `n_pairs`, `seeds`, `plateau` (the uniform-attention MSE loss), the `objective`."""

    time: np.ndarray
    loss: np.ndarray
    coords: np.ndarray
    n_pairs: list[int]
    seeds: list[int]
    plateau: list[float]
    steps: int = 0
    attention: np.ndarray | None = None
    objective: str = "mse"
    notes: list[str] = field(default_factory=list)

    def cell(self, i: int) -> dict:
        out = {"time": self.time, "loss": self.loss[:, i], "coords": self.coords[:, i]}
        return {**out, "attention": self.attention[:, i]} if self.attention is not None else out


def coordinate_flow(
    n_pairs: list[int],
    seeds: list[int] | None = None,
    dt: float = 1.0,
    max_time: float = 1e6,
    init_std: float = 0.0,
    stop_fraction: float = 0.05,
    record_every: int = 5,
    device: str | torch.device = "cpu",
    progress: bool = True,
    objective: str = "mse",
    stop_on: str | None = None,
) -> FlowHistory:
    """Gradient flow for every cell (`n_pairs[i]`, `seeds[i]`) at once. Each cell starts at
    `init_std` x N(0, 1) coordinates (0: the paper's zero init; seeded) and stops at
    `max_time` or when `stop_on` says: "loss" (the default under `objective` "mse",
    `gram.forward`), its loss below `stop_fraction` x its plateau loss; "attention" (the
    default under "ce", whose loss only vanishes as the logits diverge), its attention on the
    queried label above 1 - `stop_fraction`."""
    stop_on = stop_on or ("loss" if objective == "mse" else "attention")
    if stop_on not in ("loss", "attention") or (stop_on == "loss" and objective != "mse"):
        raise ValueError(
            f"stop_on must be 'attention', or 'loss' under objective 'mse'; got {stop_on!r} "
            f"with objective {objective!r}."
        )
    seeds = list(seeds) if seeds is not None else [0] * len(n_pairs)
    if len(seeds) != len(n_pairs):
        raise ValueError(f"{len(n_pairs)} n_pairs but {len(seeds)} seeds: give one per cell.")
    if not dt > 0 or not max_time > 0:
        raise ValueError(f"dt and max_time must be > 0, got dt={dt}, max_time={max_time}.")
    b = gram.GramBatch.build(list(n_pairs), device=device)
    plat = [gram.plateau(int(n))[0] for n in n_pairs]
    stop = torch.tensor(plat, dtype=torch.float64, device=device) * stop_fraction
    c0 = [
        torch.randn(19, generator=torch.Generator().manual_seed(s), dtype=torch.float64)
        for s in seeds
    ]
    c = (torch.stack(c0) * init_std).to(device)
    active = torch.ones(len(seeds), dtype=torch.bool, device=device)
    # Finished cells leave the computation (their coordinates, loss and attention stay as they
    # were last computed: frozen coordinates would recompute the same values), so the long tail
    # where only the largest N still trains costs a few cells per step, not all of them.
    cells = torch.arange(len(seeds), device=device)
    sub = b
    L_all = torch.zeros(len(seeds), dtype=torch.float64, device=device)
    att_all = torch.zeros_like(L_all)
    times, losses, coords, attn = [], [], [], []
    step, bar = (
        0,
        progress_bar(total=len(seeds), desc="gradient flow (cells done)", disable=not progress),
    )
    while True:
        c_run = c[cells].requires_grad_()
        out = gram.forward(c_run, sub, objective)
        L, att = out["loss"], out["attention"].detach()
        L_all[cells], att_all[cells] = L.detach(), att
        going = L.detach() > stop[cells] if stop_on == "loss" else att < 1 - stop_fraction
        active[cells] = going & (step * dt < max_time)
        if step % record_every == 0 or not bool(active.any()):
            times.append(step * dt)
            losses.append(L_all.cpu().numpy().copy())
            coords.append(c.cpu().numpy().copy())
            attn.append(att_all.cpu().numpy().copy())
        bar.update(int((~active).sum()) - bar.n)
        if not bool(active.any()):
            break
        (g,) = torch.autograd.grad(L.sum(), c_run)
        with torch.no_grad():
            c[cells] = c_run - dt * g * active[cells][:, None]
        if not bool(active[cells].all()):
            cells = active.nonzero().squeeze(-1)
            sub = b.select(cells)
        step += 1
    bar.close()
    return FlowHistory(
        np.array(times),
        np.stack(losses),
        np.stack(coords),
        [int(n) for n in n_pairs],
        seeds,
        plat,
        step,
        np.stack(attn),
        objective,
    )


def _population(population: str, n_pairs: int, D: int, batch: int, g: torch.Generator):
    if population in ("exact", "fixed"):
        tok, pos, tgt = data.canonical(n_pairs, D)
        return tok, pos, tgt
    if population == "orbit":
        return data.orbit(n_pairs, D)
    return data.sample(n_pairs, D, batch, g)


def matrix_flow(
    n_pairs: int,
    D: int | None = None,
    population: str = "exact",
    steps: int = 1000,
    lr: float | None = None,
    init_std: float = 0.0,
    batch: int = 64,
    seed: int = 0,
    snapshots: int = 60,
    progress: bool = True,
) -> dict:
    """Train the full-matrix model; returns `{"steps", "time" (W-space, lr x steps), "loss",
    "weights" [S, n_params] float64 snapshots (log-spaced steps), "residual" [S], "coords"
    [S, 19], "D", "model" (the trained `MinimalInductionModel`)}`. `lr` defaults to D
    (coordinate step 1)."""
    if population not in POPULATIONS:
        raise ValueError(f"population must be one of {POPULATIONS}, got {population!r}.")
    if population == "exact" and init_std > 0:
        raise ValueError(
            "population 'exact' projects the gradient, which is the population gradient only on "
            "the subspace (zero init); use 'orbit' or 'sampled' with init_std > 0."
        )
    D = D or data.min_dim(n_pairs)
    data.check(n_pairs, D)
    lr = float(lr if lr is not None else D)
    model = MinimalInductionModel(D, init_std=init_std, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    fixed = None if population == "sampled" else _population(population, n_pairs, D, batch, g)
    marks = set(np.unique(np.geomspace(1, steps, snapshots).astype(int)).tolist()) | {0, steps}
    rows, out = [], {"step": [], "loss": [], "residual": [], "coords": []}
    params = list(model.weights().values())
    for step in progress_bar(
        range(steps + 1), desc=f"matrix flow ({population})", disable=not progress
    ):
        tok, pos, tgt = fixed or _population(population, n_pairs, D, batch, g)
        L = mse(model(tok, pos), tgt)
        if step in marks:
            rows.append(torch.cat([p.detach().flatten() for p in params]).numpy().copy())
            out["step"].append(step)
            out["loss"].append(float(L.detach()))
            out["residual"].append(model.residual())
            out["coords"].append(model.coords().numpy())
        if step == steps:
            break
        grads = dict(zip(model.weights(), torch.autograd.grad(L, params), strict=True))
        if population == "exact":
            grads = subspace.project(grads)  # the group average (module docstring)
        with torch.no_grad():
            for name, p in model.weights().items():
                p -= lr * grads[name]
    return {
        **{k: np.array(v) for k, v in out.items()},
        "time": np.array(out["step"]) * lr,
        "weights": np.stack(rows),
        "D": D,
        "lr": lr,
        "population": population,
        "model": model,
    }
