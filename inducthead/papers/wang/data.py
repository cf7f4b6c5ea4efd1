"""The mixed target of Wang et al. 2024's dynamics analysis (section 4; PROVISIONAL
reconstruction, the paper's text was not available): Gaussian inputs x_1..x_L ~ N(0, I_d) and

    y = alpha* x_{L-2} + (1 - alpha*) sum_{s=2..L} softmax_s(<x_L, x_{s-1}>) x_s,

a 4-gram part (the input two places back: "lazy") and an in-context 2-gram part (the inputs
whose predecessor resembles the query: "rich", an induction head). 1-based in the formula,
0-based in the code. Every model of a batch of C has its own inputs and its own alpha*."""

from __future__ import annotations

import torch
from torch import Tensor


def _check(n_models: int, batch: int, L: int, d: int) -> None:
    if L < 3 or d < 1 or batch < 1 or n_models < 1:
        raise ValueError(
            f"need L >= 3 (the 4-gram reads x_(L-2)), d, batch, n_models >= 1; got L={L}, d={d}, "
            f"batch={batch}, n_models={n_models}."
        )


def sample(n_models: int, batch: int, L: int, d: int, g: torch.Generator) -> Tensor:
    """`X [C, B, L, d]` standard Gaussian inputs."""
    _check(n_models, batch, L, d)
    return torch.randn(n_models, batch, L, d, generator=g)


def sample_per_model(gens: list[torch.Generator], batch: int, L: int, d: int) -> Tensor:
    """`X [C, B, L, d]`, model c's inputs from its own generator `gens[c]` (the values
    `sample(1, batch, L, d, gens[c])` would give, written in place: no concatenation)."""
    _check(len(gens), batch, L, d)
    X = torch.empty(len(gens), batch, L, d)
    for x, g in zip(X, gens, strict=True):
        x.normal_(generator=g)
    return X


def targets(X: Tensor, alpha: Tensor) -> dict[str, Tensor]:
    """`{"fourgram": alpha x_{L-2}, "induction": (1 - alpha) IH(x), "y"}` `[C, B, d]` for
    `alpha [C]`; IH(x) = sum_{s >= 1} softmax_s(<x_L, x_{s-1}>) x_s (0-based s)."""
    sim = (X[:, :, :-1] @ X[:, :, -1, :, None])[..., 0]  # <x_L, x_{s-1}> for s = 1..L-1
    ih = (torch.softmax(sim, -1)[:, :, None] @ X[:, :, 1:])[:, :, 0]
    a = alpha[:, None, None]
    four, ind = a * X[:, :, -3], (1 - a) * ih
    return {"fourgram": four, "induction": ind, "y": four + ind}
