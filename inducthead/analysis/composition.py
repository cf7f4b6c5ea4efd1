"""Composition scores between heads (Elhage et al. 2021, "Composition scores"), computed on the
factored OV / QK circuits."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Literal

import torch
from torch import Tensor
from transformer_lens import FactoredMatrix

from inducthead.analysis.adapters import ModelAdapter
from inducthead.analysis.heads import Head


def factored_composition(left: FactoredMatrix, right: FactoredMatrix) -> Tensor:
    """‖L R‖_F / (‖L‖_F ‖R‖_F) for factored L = A₁B₁ and R = A₂B₂ (leading dims broadcast).

    The same quantity as `transformer_lens.utilities.composition_scores` (tested equal), from
    d_head × d_head Gram matrices instead of SVDs: ‖A₁(B₁A₂)B₂‖² = tr(G M H Mᵀ) with
    G = A₁ᵀA₁, M = B₁A₂, H = B₂B₂ᵀ. Much faster for the pairs `detect` needs."""
    A1, B1, A2, B2 = (x.double() for x in (left.A, left.B, right.A, right.B))
    G = A1.transpose(-1, -2) @ A1
    H = B2 @ B2.transpose(-1, -2)
    M = B1 @ A2
    product = ((G @ M) * (M @ H)).sum((-2, -1))
    norm_left = (G * (B1 @ B1.transpose(-1, -2))).sum((-2, -1))
    norm_right = ((A2.transpose(-1, -2) @ A2) * H).sum((-2, -1))
    return (product.clamp(min=0) / (norm_left * norm_right)).sqrt().float()


def _right_factor(adapter: ModelAdapter, kind: str) -> FactoredMatrix:
    if kind == "V":
        return FactoredMatrix(adapter.W_V, adapter.W_O)
    if kind == "Q":
        return FactoredMatrix(adapter.W_Q, adapter.W_K.transpose(-2, -1))
    return FactoredMatrix(adapter.W_K, adapter.W_Q.transpose(-2, -1))  # K: (W_Q W_Kᵀ)ᵀ


@lru_cache(maxsize=32)
def random_composition_baseline(d_model: int, d_head: int, kind: str, n: int = 64) -> float:
    """Mean composition score of Gaussian matrices of the heads' shapes (seeded)."""
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    left = FactoredMatrix(rand(n, d_model, d_head), rand(n, d_head, d_model))
    right = FactoredMatrix(rand(n, d_model, d_head), rand(n, d_head, d_model))
    return factored_composition(left, right).mean().item()


def composition_scores(model, kind: Literal["Q", "K", "V"] = "K", baseline: bool = True) -> Tensor:
    """Composition scores `[l1, h1, l2, h2]` between each earlier head's OV circuit and a later
    head's query (Q), key (K) or value (V) input: ‖W_A W_B‖_F / (‖W_A‖_F ‖W_B‖_F) (Elhage et al.
    2021, "Composition scores"; TransformerLens's `all_composition_scores` convention), minus
    the mean score of random Gaussian matrices of the same shapes (the paper's baseline). Entries
    with l1 >= l2 are NaN: no composition is possible."""
    if kind not in ("Q", "K", "V"):
        raise ValueError(f"kind must be 'Q', 'K' or 'V', got {kind!r}.")
    adapter = ModelAdapter.wrap(model)
    with torch.no_grad():
        left = FactoredMatrix(adapter.W_V, adapter.W_O)
        right = _right_factor(adapter, kind)
        rows = []
        for l in range(adapter.n_layers):  # one sending layer at a time bounds memory
            sender = FactoredMatrix(left.A[l][:, None, None], left.B[l][:, None, None])
            rows.append(factored_composition(sender, right))
        scores = torch.stack(rows)  # [l1, h1, l2, h2]
    if baseline:
        scores = scores - random_composition_baseline(adapter.d_model, adapter.d_head, kind)
    layers = torch.arange(adapter.n_layers, device=scores.device)
    later = layers[:, None, None, None] < layers[None, None, :, None]
    return torch.where(later, scores, torch.full_like(scores, math.nan)).cpu()


def k_composition_with_previous(adapter: ModelAdapter, previous: Tensor):
    """Each head's K-composition (baseline subtracted) with the strongest previous-token head of
    the earlier layers (NaN in layer 0), and which head that was. Only these L·H pairs are
    computed, not all (L·H)² of `composition_scores`."""
    L, H = adapter.n_layers, adapter.n_heads
    out = torch.full((L, H), math.nan)
    sources: list[Head | None] = [None] * L
    if L < 2:
        return out, sources
    for l in range(1, L):
        flat = int(previous[:l].flatten().argmax())
        sources[l] = Head(flat // H, flat % H)
    src_layer = torch.tensor([sources[l][0] for l in range(1, L)])
    src_head = torch.tensor([sources[l][1] for l in range(1, L)])
    with torch.no_grad():
        W_V, W_O = adapter.W_V[src_layer, src_head], adapter.W_O[src_layer, src_head]  # [L-1, ...]
        left = FactoredMatrix(W_V[:, None], W_O[:, None])  # one sender per receiving layer
        right = FactoredMatrix(adapter.W_K[1:], adapter.W_Q[1:].transpose(-2, -1))  # (W_Q W_Kᵀ)ᵀ
        comp = factored_composition(left, right)  # [L-1, H]
    baseline = random_composition_baseline(adapter.d_model, adapter.d_head, "K")
    out[1:] = (comp - baseline).float().cpu()
    return out, sources
