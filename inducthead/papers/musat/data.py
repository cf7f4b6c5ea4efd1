"""The minimal in-context task of Musat et al. 2025 (section 3.1; provisional details marked).

A sequence is N item-label pairs and a query item: x_1 y_1 x_2 y_2 ... x_N y_N x_q, with x_q one
of the N items (uniformly) and the target its label. Items and labels are 2N orthonormal token
vectors; positions are orthonormal too, and a label's position vector is M times its item's
(M the complex structure of `subspace`), so "a label follows its item" is the fixed relation M.

Population (the paper's Assumption 2, population MSE; isotropy as Assumptions 3 and 7, per
secondary notes). PROVISIONAL reconstruction, ours: the population is the canonical sequences
(items e_0.., labels e_N.., item slot k at e_{2k}, label slot k at e_{2k+1} = M e_{2k}, the query
slot at e_{2N}) under every rotation R of token space and every rotation Q of position space
that commutes with M (the unitary group U(D/2) acting on R^D = C^{D/2}). Three ways to average:

- `canonical`: the N canonical sequences; on the 19-dimensional subspace the loss does not
  depend on the rotation, and the population gradient is the orthogonal projection of their
  gradient onto the subspace (the group average), which `flow` applies.
- `orbit_frames`: a finite group with the same commutant (the real Pauli group on tokens, the
  complex Pauli group with phases on positions, D a power of 2): the literal population average,
  no projection; tests use it to check the subspace property without assuming it.
- `sample`: Haar-random rotations per sequence (a finite batch: the gradient leaves the
  subspace by sampling noise).
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor


def min_dim(n_pairs: int) -> int:
    """The smallest D that holds 2N token vectors and 2N + 1 position vectors (D even)."""
    return 2 * n_pairs + 2


def check(n_pairs: int, D: int) -> None:
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be >= 1, got {n_pairs}.")
    if min_dim(n_pairs) > D or D % 2:
        raise ValueError(
            f"D must be even and >= 2 * n_pairs + 2 = {min_dim(n_pairs)}, got D={D} for "
            f"n_pairs={n_pairs}."
        )


def canonical(n_pairs: int, D: int, dtype=torch.float64) -> tuple[Tensor, Tensor, Tensor]:
    """(tokens `[N, T, D]`, positions `[T, D]`, targets `[N, D]`), T = 2N + 1: sequence k
    queries item k."""
    check(n_pairs, D)
    N, T = n_pairs, 2 * n_pairs + 1
    eye = torch.eye(D, dtype=dtype)
    tokens = torch.zeros(N, T, D, dtype=dtype)
    tokens[:, 0 : 2 * N : 2] = eye[:N]
    tokens[:, 1 : 2 * N : 2] = eye[N : 2 * N]
    tokens[:, -1] = eye[:N]
    positions = eye[:T]  # item slot k: e_{2k}; label slot k: e_{2k+1} = M e_{2k}; query e_{2N}
    return tokens, positions, eye[N : 2 * N].clone()


def realify(U: Tensor) -> Tensor:
    """The real `[2m, 2m]` matrix of a complex `[..., m, m]` one in the (Re, Im) pair layout
    that `subspace.complex_structure` uses (multiplication by i is M)."""
    *lead, m, _ = U.shape
    R = torch.empty(*lead, 2 * m, 2 * m, dtype=U.real.dtype)
    R[..., 0::2, 0::2], R[..., 0::2, 1::2] = U.real, -U.imag
    R[..., 1::2, 0::2], R[..., 1::2, 1::2] = U.imag, U.real
    return R


def haar_orthogonal(n: int, D: int, g: torch.Generator, dtype=torch.float64) -> Tensor:
    """`[n, D, D]` Haar-random orthogonal matrices (QR of a Gaussian with the sign fix)."""
    Q, R = torch.linalg.qr(torch.randn(n, D, D, generator=g, dtype=dtype))
    return Q * torch.sign(torch.diagonal(R, dim1=-2, dim2=-1))[..., None, :]


def haar_unitary(n: int, D: int, g: torch.Generator, dtype=torch.float64) -> Tensor:
    """`[n, D, D]` real forms of Haar-random unitaries of C^{D/2} (they commute with M)."""
    m = D // 2
    z = torch.complex(*(torch.randn(2, n, m, m, generator=g, dtype=dtype) / math.sqrt(2)))
    Q, R = torch.linalg.qr(z)
    d = torch.diagonal(R, dim1=-2, dim2=-1)
    return realify(Q * (d / d.abs())[..., None, :])


def rotate(tokens, positions, targets, R_tok: Tensor, R_pos: Tensor):
    """Apply per-sequence rotations `[B, D, D]` to canonical sequences (tokens `[B, T, D]`)."""
    tok = torch.einsum("bed,btd->bte", R_tok, tokens)
    pos = torch.einsum("bed,td->bte", R_pos, positions) if positions.ndim == 2 else positions
    return tok, pos, torch.einsum("bed,bd->be", R_tok, targets)


def sample(n_pairs: int, D: int, batch: int, g: torch.Generator, dtype=torch.float64):
    """A finite batch: `batch` sequences, each with a uniform query and Haar-random token and
    position rotations: (tokens, positions `[B, T, D]`, targets `[B, D]`)."""
    tokens, positions, targets = canonical(n_pairs, D, dtype)
    k = torch.randint(n_pairs, (batch,), generator=g)
    R_tok, R_pos = haar_orthogonal(batch, D, g, dtype), haar_unitary(batch, D, g, dtype)
    return rotate(tokens[k], positions, targets[k], R_tok, R_pos)


def _pauli(n: int, complex_: bool) -> list[Tensor]:
    X = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    Z = torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=torch.float64)
    eye = torch.eye(2, dtype=torch.float64)
    out = []
    for ab in itertools.product((0, 1), repeat=2 * n):
        m = torch.ones(1, 1, dtype=torch.float64)
        for a, b in zip(ab[:n], ab[n:], strict=True):
            m = torch.kron(m, (X if a else eye) @ (Z if b else eye))
        out.append(m.to(torch.complex128) if complex_ else m)
    return out


def orbit_frames(D: int) -> tuple[Tensor, Tensor]:
    """(token rotations `[D^2, D, D]`, position rotations `[D^2, D, D]`): finite groups whose
    commutants are those of O(D) (span{I}) and of U(D/2) (span{I, M}); D a power of 2 >= 4."""
    n = int(round(math.log2(D)))
    if D < 4 or 2**n != D:
        raise ValueError(f"orbit_frames needs D a power of 2 >= 4, got {D}.")
    tok = torch.stack(_pauli(n, False))
    phases = [complex(1, 0), complex(0, 1), complex(-1, 0), complex(0, -1)]
    pos = torch.stack([realify(c * P) for c in phases for P in _pauli(n - 1, True)])
    return tok, pos


def orbit(n_pairs: int, D: int, dtype=torch.float64):
    """The literal finite population: every canonical sequence under every pair of frames."""
    tokens, positions, targets = canonical(n_pairs, D, dtype)
    R_tok, R_pos = orbit_frames(D)
    nt, npos, N = len(R_tok), len(R_pos), n_pairs
    it, ip, k = torch.meshgrid(torch.arange(nt), torch.arange(npos), torch.arange(N), indexing="ij")
    it, ip, k = it.flatten(), ip.flatten(), k.flatten()
    return rotate(tokens[k], positions, targets[k], R_tok[it].to(dtype), R_pos[ip].to(dtype))
