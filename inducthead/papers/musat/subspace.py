"""The 19-dimensional subspace of Musat et al. 2025 (Theorem 1; provisional where marked).

Stream layout (each slot is D wide; "x" slots carry token vectors, "p" slots position vectors):

- h0 = [x, p] (2D), h1 = [h0, a1x, a1p] (4D), h2 = [h1 at the query, a2x, a2p, a2a1x, a2a1p] (8D),
  where a1 = layer 1's attention output and a2 = layer 2's (at the query).
- W1 (2D x 2D) = diag(alpha1 I, alpha2 I + alpha3 M): 3 coordinates.
- W2 (4D x 4D): the 4 token-token blocks are beta1..beta4 times I (row-major over the query
  slot x, a1x and the key slot x, a1x: beta2 is query token x key's layer-1 token); the 4
  position-position blocks are beta5 I + beta6 M, ..., beta11 I + beta12 M: 12 coordinates.
- W3 (D x 8D) reads the four token slots (x, a1x, a2x, a2a1x of h2) with gamma1..gamma4 times I
  (gamma3 copies layer 2's attended token): 4 coordinates. Token-position blocks are zero.

Why 19: the population is invariant under rotating all token vectors (any orthogonal R) and,
independently, all position vectors by any orthogonal map commuting with M (M a complex
structure, M^2 = -I). The architecture is equivariant, so from zero init the population
gradient stays in the commutant of that group: scalar multiples of I on token blocks, span{I, M}
on position blocks, zero on mixed blocks (Musat et al. 2025, section 3 and Theorem 1, which
proves the 19 by such a symmetry argument; the group chosen here is our reconstruction).
PROVISIONAL: the numbering of alpha1, alpha2, beta1, beta3..beta12, gamma1, gamma2, gamma4 is
ours; only alpha3 (label attends to its item), beta2 (query matches the layer-1 token) and gamma3
(copy) are named by their role in the paper's text we could read (abstract and secondary notes).

Every basis matrix has squared Frobenius norm D and they are mutually orthogonal, so
coordinates are c_i = <W, B_i> / D and gradient flow on W moves c at rate -(1/D) dL/dc.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

H0 = ("x", "p")
H1 = H0 + ("a1x", "a1p")
H2 = H1 + ("a2x", "a2p", "a2a1x", "a2a1p")
TOKEN_SLOTS = {"x", "a1x", "a2x", "a2a1x"}

ALPHA = ("alpha1", "alpha2", "alpha3")
BETA = tuple(f"beta{i}" for i in range(1, 13))
GAMMA = tuple(f"gamma{i}" for i in range(1, 5))
NAMES = ALPHA + BETA + GAMMA
HEADLINE = ("gamma3", "beta2", "alpha3")  # the three that grow (the paper's section 3.3)


def complex_structure(D: int, dtype=torch.float64) -> Tensor:
    """M: J e_{2k} = e_{2k+1}, J e_{2k+1} = -e_{2k} (a rotation by 90 degrees in each plane;
    M^T M = I, M^2 = -I). With item positions u_k, a label's position is M u_k."""
    if D % 2:
        raise ValueError(f"D must be even (M pairs coordinates), got {D}.")
    J = torch.zeros(D, D, dtype=dtype)
    idx = torch.arange(0, D, 2)
    J[idx + 1, idx] = 1.0
    J[idx, idx + 1] = -1.0
    return J


@dataclass(frozen=True)
class Block:
    """One basis matrix: `kind` "I" or "M" placed at (row slot, column slot) of W1, W2 or W3."""

    matrix: str
    row: str
    col: str
    kind: str


def _blocks() -> list[Block]:
    out = [Block("W1", "x", "x", "I"), Block("W1", "p", "p", "I"), Block("W1", "p", "p", "M")]
    for r in ("x", "a1x"):
        for c in ("x", "a1x"):
            out.append(Block("W2", r, c, "I"))
    for r in ("p", "a1p"):
        for c in ("p", "a1p"):
            out += [Block("W2", r, c, "I"), Block("W2", r, c, "M")]
    out += [Block("W3", "y", c, "I") for c in ("x", "a1x", "a2x", "a2a1x")]
    return out


BLOCKS = _blocks()
_SLOTS = {"W1": (H0, H0), "W2": (H1, H1), "W3": (("y",), H2)}


def shapes(D: int) -> dict[str, tuple[int, int]]:
    """Parameter shapes: W1 [2D, 2D], W2 [4D, 4D], W3 [D, 8D]."""
    return {k: (len(r) * D, len(c) * D) for k, (r, c) in _SLOTS.items()}


def basis(D: int, dtype=torch.float64) -> dict[str, Tensor]:
    """`{"W1": [19, 2D, 2D], "W2": [19, 4D, 4D], "W3": [19, D, 8D]}`: the 19 basis matrices,
    zero outside the matrix each belongs to."""
    eye, M = torch.eye(D, dtype=dtype), complex_structure(D, dtype)
    out = {k: torch.zeros(len(BLOCKS), *s, dtype=dtype) for k, s in shapes(D).items()}
    for i, b in enumerate(BLOCKS):
        rows, cols = _SLOTS[b.matrix]
        r, c = rows.index(b.row) * D, cols.index(b.col) * D
        out[b.matrix][i, r : r + D, c : c + D] = eye if b.kind == "I" else M
    return out


def from_coords(coords: Tensor, D: int) -> dict[str, Tensor]:
    """W1, W2, W3 from coordinates `[..., 19]` (leading dims kept: a batch of models)."""
    B = basis(D, coords.dtype)
    return {k: torch.einsum("...i,irc->...rc", coords, v.to(coords.device)) for k, v in B.items()}


def coords(weights: dict[str, Tensor]) -> Tensor:
    """The 19 coordinates `[..., 19]` of W1, W2, W3 (orthogonal projection: <W, B_i> / D)."""
    D = weights["W3"].shape[-2]
    B = basis(D, weights["W1"].dtype)
    return (
        sum(torch.einsum("...rc,irc->...i", weights[k], B[k].to(weights[k].device)) for k in B) / D
    )


def project(weights: dict[str, Tensor]) -> dict[str, Tensor]:
    """The orthogonal projection of W1, W2, W3 onto the 19-dimensional subspace."""
    return from_coords(coords(weights), weights["W3"].shape[-2])


def residual(weights: dict[str, Tensor]) -> float:
    """||W - P(W)|| / ||W|| over all three matrices together (0 for W = 0): how far the
    parameters are outside the subspace, relative to their size."""
    P = project(weights)
    out = sum(float(((weights[k] - P[k]) ** 2).sum()) for k in weights)
    total = sum(float((w**2).sum()) for w in weights.values())
    return (out / total) ** 0.5 if total > 0 else 0.0
