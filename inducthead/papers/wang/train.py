"""Gradient descent on the mixed target (plain GD, a fresh Gaussian batch per step and model),
C models at once, recording the loss split into its 4-gram and induction parts.

Parts: L_4 = 1/2 E||alpha* x_{L-2} - f_rpe||^2 / d and L_IH = 1/2 E||(1 - alpha*) IH - f_dp||^2 / d
(each head against its own component; PROVISIONAL, our split of the paper's Fig. 2), and their
relative errors e_4 = L_4 / L_4(f = 0), e_IH = L_IH / L_IH(f = 0).
"""

from __future__ import annotations

import numpy as np
import torch

from inducthead._progress import progress_bar
from inducthead.papers.wang import data, model


def run(
    alpha: list[float],
    sigma: list[float],
    seeds: list[int],
    steps: int,
    batch: int = 256,
    L: int = 32,
    d: int = 16,
    lr: float = 1.0,
    record_every: int = 10,
    progress: bool = True,
) -> dict:
    """Train one model per (alpha[i], sigma[i], seeds[i]) from theta = sigma (all six scalars);
    returns `{"step" [R], "loss", "fourgram", "induction", "e4", "eih" [R, C], "theta" [R, C, 6]}`.
    Each model draws its inputs from its own generator (seeded), so seeds differ by data."""
    C = len(alpha)
    if not (len(sigma) == len(seeds) == C) or C == 0:
        raise ValueError(
            f"alpha, sigma and seeds need one entry per model, got {C}, {len(sigma)}, {len(seeds)}."
        )
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    a = torch.tensor(alpha, dtype=torch.float32)
    theta = torch.tensor([[float(s)] * 6 for s in sigma]).requires_grad_()
    rows: dict = {k: [] for k in ("step", "loss", "fourgram", "induction", "e4", "eih", "theta")}
    for step in progress_bar(range(steps + 1), desc="mixed-target GD", disable=not progress):
        X = data.sample_per_model(gens, batch, L, d)
        t = data.targets(X, a)
        f = model.forward(theta, X)
        l4 = 0.5 * ((t["fourgram"] - f["fourgram"]) ** 2).sum(-1).mean(-1) / d
        lih = 0.5 * ((t["induction"] - f["induction"]) ** 2).sum(-1).mean(-1) / d
        loss = 0.5 * ((t["y"] - f["out"]) ** 2).sum(-1).mean(-1) / d
        if step % record_every == 0 or step == steps:
            with torch.no_grad():
                n4 = 0.5 * (t["fourgram"] ** 2).sum(-1).mean(-1) / d
                nih = 0.5 * (t["induction"] ** 2).sum(-1).mean(-1) / d
                rows["step"].append(step)
                for k, v in (
                    ("loss", loss),
                    ("fourgram", l4),
                    ("induction", lih),
                    ("e4", l4 / n4),
                    ("eih", lih / nih),
                ):
                    rows[k].append(v.numpy().copy())
                rows["theta"].append(theta.detach().numpy().copy())
        if step == steps:
            break
        (g,) = torch.autograd.grad(loss.sum(), theta)
        with torch.no_grad():
            theta -= lr * g
    return {k: np.array(v) for k, v in rows.items()}


def phase_steps(step: np.ndarray, e4: np.ndarray, eih: np.ndarray) -> dict:
    """For one model: `fourgram_learned_step` (e_4 first < 0.1), `induction_emergence_step`
    (e_IH first < 0.5, the midpoint of its fall), `plateau_steps` (between them), and
    `transition_steps` (e_IH from 0.9 to 0.1: how abrupt). NaN where never reached
    (PROVISIONAL thresholds, ours)."""

    def first(mask) -> float:
        return float(step[np.argmax(mask)]) if mask.any() else float("nan")

    f4, ih = first(e4 < 0.1), first(eih < 0.5)
    return {
        "fourgram_learned_step": f4,
        "induction_emergence_step": ih,
        "plateau_steps": ih - f4,
        "transition_steps": first(eih < 0.1) - first(eih < 0.9),
    }
