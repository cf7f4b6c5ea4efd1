"""The six-scalar two-layer model of Wang et al. 2024's dynamics analysis (section 4;
PROVISIONAL reconstruction), batched over C models trained in one computation.

Relative positions are ALiBi-style: a head with parameter p and lag k scores key j from query i
by -p |i - j - k| (causal), so p -> infinity attends to exactly i - k and p = 0 is uniform.

- layer 1, every position s: one relative-position head (p1, lag 1), output z_s = sum_j A_sj x_j
  written to its own residual subspace, scaled by v1;
- layer 2, at position L: a relative-position head (p2, lag 2) with output c2 sum_j A_j x_j (the
  lazy 4-gram path) and a dot-product head scoring key s by w <x_L, v1 z_s>, output
  c3 sum_s softmax_s x_s (the induction head once z_s ~ x_{s-1}).

(An earlier try with a bump score p [j = i - k] instead of the distance decay stalls: c3 goes
negative to cancel the relative head's uniform leak and w, v1 decay to 0; measured, 6000 steps.)
"""

from __future__ import annotations

import torch
from torch import Tensor

PARAMS = ("p1", "v1", "p2", "c2", "w", "c3")


def relative_attention(p: Tensor, n: int, lag: int) -> Tensor:
    """`[C, n, n]`: causal softmax of -p |i - j - lag| (ALiBi-style, centred on the lag)."""
    i = torch.arange(n, device=p.device)
    dist = (i[:, None] - i[None, :] - lag).abs().to(p.dtype)
    causal = i[None, :] <= i[:, None]
    return torch.softmax((-p[:, None, None] * dist).masked_fill(~causal, float("-inf")), -1)


def _mix(weights: Tensor, X: Tensor) -> Tensor:
    """`sum_j weights[c, b, j] X[c, b, j]` `[C, B, d]` for `weights [C, B, L]`."""
    return (weights[:, :, None] @ X)[:, :, 0]


def forward(theta: Tensor, X: Tensor) -> dict[str, Tensor]:
    """`theta [C, 6]` (`PARAMS` order), `X [C, B, L, d]` -> `{"fourgram", "induction", "out"}`
    `[C, B, d]` (each head's contribution and their sum) and the patterns `"A1" [C, L, L]`,
    `"a2_rpe" [C, L]`, `"a2_dp" [C, B, L]`."""
    if theta.ndim != 2 or theta.shape[1] != 6 or X.ndim != 4 or X.shape[0] != theta.shape[0]:
        raise ValueError(
            f"theta must be [C, 6] and X [C, B, L, d] with the same C; got {tuple(theta.shape)} "
            f"and {tuple(X.shape)}."
        )
    p1, v1, p2, c2, w, c3 = theta.unbind(-1)
    L = X.shape[2]
    A1 = relative_attention(p1, L, 1)
    a2_rpe = relative_attention(p2, L, 2)[:, -1]
    # every product below is a matmul with X [C, B, L, d] as is (einsum would permute and copy
    # it: most of a step's time at the full mode's 55 x 1024 sequences)
    fourgram = c2[:, None, None] * _mix(a2_rpe[:, None].expand(-1, X.shape[1], -1), X)
    # <x_L, z_s> = sum_j A1_sj <x_L, x_j>: the query's inner products first, never z itself
    # ([B, L] per model instead of [B, L, d]: d times less work, forward and backward)
    gram = (X @ X[:, :, -1, :, None])[..., 0]  # [C, B, L]
    scores = (w * v1)[:, None, None] * (gram @ A1.transpose(1, 2))
    a2_dp = torch.softmax(scores, -1)
    induction = c3[:, None, None] * _mix(a2_dp, X)
    return {
        "fourgram": fourgram,
        "induction": induction,
        "out": fourgram + induction,
        "A1": A1,
        "a2_rpe": a2_rpe,
        "a2_dp": a2_dp,
    }
