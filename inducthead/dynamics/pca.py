"""PCA across checkpoints: few rows (checkpoints), many columns (examples or parameters).

Everything goes through the Gram matrix of the rows: for T checkpoints the T x T matrix
G = X X^T holds all the PCA needs (its eigenvalues are the variances, its eigenvectors times
their square roots the projected trajectory), so PCA is exact, with no D x D matrix and no
iterative solver. For weights, `weight_grams` accumulates G over column chunks read straight
from the safetensors files of all checkpoints at once (memory-mapped `get_slice`), so peak
memory is T x chunk numbers whatever the model size; sources without files (pretrained models)
are spooled once to a float32 memory map first.

- explained variance ratio: l_k / sum l.
- participation ratio: (sum l)^2 / sum l^2 (Gao et al. 2017's effective dimension; 1 when one
  direction holds all the variance, T - 1 when all are equal).
- span dimension at `tol`: the number of singular values of the update matrix
  [theta_t - theta_0]_t above tol x the largest: the dimension of the subspace the weights moved
  in (Musat et al. 2025's "19-dimensional subspace" is this number for their model).
"""

from __future__ import annotations

import fnmatch
import math
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

MODEL_PREFIX = "model/"
CHUNK_BYTES = 64 * 2**20  # float64 working set per chunk of columns, all checkpoints together


def centred_gram(G: np.ndarray) -> np.ndarray:
    """J G J with J = I - 11^T / T: the Gram matrix of the rows minus their mean."""
    T = len(G)
    J = np.eye(T) - 1.0 / T
    return J @ G @ J


def gram_pca(Gc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(variances, projections `[T, T]`) from a centred Gram matrix, largest first; the
    variances are eigenvalues / (T - 1) (clipped at 0), projections are PCA scores."""
    T = len(Gc)
    vals, vecs = np.linalg.eigh((Gc + Gc.T) / 2)
    order = np.argsort(vals)[::-1]
    vals, vecs = np.clip(vals[order], 0, None), vecs[:, order]
    scores = vecs * np.sqrt(vals)[None, :]
    # a deterministic sign: the largest-magnitude entry of each score vector is positive
    flip = np.sign(scores[np.abs(scores).argmax(0), np.arange(T)])
    flip[flip == 0] = 1
    return vals / max(T - 1, 1), scores * flip[None, :]


def participation_ratio(variances: np.ndarray) -> float:
    v = np.asarray(variances, dtype=float)
    total = v.sum()
    return float(total**2 / (v**2).sum()) if total > 0 else math.nan


def explained_ratio(variances: np.ndarray) -> np.ndarray:
    v = np.asarray(variances, dtype=float)
    return v / v.sum() if v.sum() > 0 else np.full_like(v, math.nan)


def span_dimension(G_updates: np.ndarray, tol: float) -> tuple[int, np.ndarray]:
    """(dimension, singular values) of the updates whose Gram matrix is `G_updates` (rows
    theta_t - theta_0 for t >= 1): singular values above tol x the largest."""
    vals = np.clip(np.linalg.eigvalsh((G_updates + G_updates.T) / 2), 0, None)[::-1]
    sv = np.sqrt(vals)
    if not len(sv) or sv[0] == 0:
        return 0, sv
    return int((sv > tol * sv[0]).sum()), sv


def data_pca(rows: np.ndarray, n_components: int | None = None):
    """(explained ratio, projections `[T, k]`, variances) of a `[T, n]` matrix, centred jointly
    over its rows."""
    X = np.asarray(rows, dtype=float)
    X = X - X.mean(0, keepdims=True)
    variances, scores = gram_pca(X @ X.T)
    k = min(n_components or len(variances), len(variances))
    return explained_ratio(variances)[:k], scores[:, :k], variances[:k]


def param_group(name: str) -> str:
    """The parameter group a tensor belongs to: its module path ("blocks.1.attn", "embed")."""
    return name.rsplit(".", 1)[0] if "." in name else name


def select(names: Iterable[str], params) -> list[str]:
    """`names` matching `params` (None: all; else names or glob patterns such as
    "blocks.1.attn.*"); ValueError listing what exists when nothing matches a pattern."""
    names = list(names)
    if params is None:
        return names
    patterns = [params] if isinstance(params, str) else list(params)
    chosen = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    missing = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n in names)]
    if missing:
        raise ValueError(f"no parameter matches {missing}; parameters: {', '.join(names)}.")
    return chosen


def _accumulate(grams: dict, group: str, X: np.ndarray) -> None:
    D = X - X[:1]  # updates relative to the first checkpoint: exact in float64
    G = grams.setdefault(group, [np.zeros((len(X), len(X))), 0])
    G[0] += D @ D.T
    G[1] += X.shape[1]


def weight_grams(paths: list[Path], params=None, chunk_bytes: int = CHUNK_BYTES):
    """`{group: (G_updates [T, T], n_params)}` over the model tensors of checkpoint files
    `paths`, read in column chunks from all files at once (memory-mapped)."""
    from safetensors import safe_open

    T = len(paths)
    handles = [safe_open(str(p), framework="pt", device="cpu") for p in paths]
    try:
        keys = list(handles[0].keys())
        names = sorted(k[len(MODEL_PREFIX) :] for k in keys if k.startswith(MODEL_PREFIX))
        grams: dict = {}
        for name in select(names, params):
            key = MODEL_PREFIX + name
            shape = handles[0].get_slice(key).get_shape()
            if not shape:  # a scalar
                X = np.array([[float(h.get_tensor(key))] for h in handles])
                _accumulate(grams, param_group(name), X)
                continue
            per_row = math.prod(shape[1:])
            rows = max(1, chunk_bytes // (8 * T * max(per_row, 1)))
            for a in range(0, shape[0], rows):
                X = np.stack(
                    [h.get_slice(key)[a : a + rows].double().numpy().reshape(-1) for h in handles]
                )
                _accumulate(grams, param_group(name), X)
        return {g: (G, n) for g, (G, n) in grams.items()}
    finally:
        del handles


def spooled_grams(
    models: Iterable, n: int, params=None, chunk_bytes: int = CHUNK_BYTES, folder=None
) -> dict:
    """`weight_grams` for models loaded one at a time (pretrained checkpoints): each model's
    parameters are written once to a float32 memory map `[n, D]` (in `folder` or a temporary
    directory), then read back in column chunks."""
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        spool, layout = None, []
        for t, model in enumerate(models):
            named = dict(model.named_parameters())
            if spool is None:
                names = select(sorted(named), params)
                layout = [(nm, named[nm].numel()) for nm in names]
                total = sum(size for _, size in layout)
                spool = np.lib.format.open_memmap(
                    Path(tmp) / "weights.npy", mode="w+", dtype=np.float32, shape=(n, total)
                )
            offset = 0
            for nm, size in layout:
                spool[t, offset : offset + size] = named[nm].detach().float().cpu().reshape(-1)
                offset += size
            del model, named
        grams: dict = {}
        offset = 0
        cols = max(1, chunk_bytes // (8 * n))
        for nm, size in layout:
            for a in range(offset, offset + size, cols):
                X = np.asarray(spool[:, a : min(a + cols, offset + size)], dtype=np.float64)
                _accumulate(grams, param_group(nm), X)
            offset += size
        del spool
        return {g: (G, k) for g, (G, k) in grams.items()}


def summarise(G_updates: np.ndarray, tol: float, n_components: int) -> dict:
    """PCA, participation ratio and span dimension from the updates' Gram matrix."""
    variances, scores = gram_pca(centred_gram(G_updates))
    dim, sv = span_dimension(G_updates[1:, 1:], tol)
    k = min(n_components, len(variances))
    return {
        "explained_variance_ratio": explained_ratio(variances)[:k].tolist(),
        "variance": variances[:k].tolist(),
        "total_variance": float(variances.sum()),
        "participation_ratio": participation_ratio(variances),
        "span_dimension": dim,
        "singular_values": sv.tolist(),
        "projections": scores[:, :k].tolist(),
    }
