"""Per-head scores, tokenizer-free: each returns a `[n_layers, n_heads]` tensor.

Attention scores are computed on synthetic probes (token ids only, optional BOS) from the
attention patterns of one batched forward pass that caches nothing but the hooks it needs.
Targets are derived from the tokens themselves, so every score also works on user-supplied
sequences: the induction target of query q is every key k right after an earlier occurrence of
q's token (k - 1 < q, tokens[k - 1] == tokens[q]). Each score's docstring cites its definition.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Literal

import torch
from torch import Tensor
from transformer_lens import FactoredMatrix

from inducthead.analysis.adapters import ModelAdapter
from inducthead.tasks.probes import (  # noqa: F401  (re-exported: scores.repeated_probe etc.)
    candidate_tokens,
    duplicate_targets,
    induction_targets,
    previous_mass,
    probe_exclusions,
    probe_fit,
    repeated_probe,
    subsample_rows,
    target_mass,
)

# ----------------------------------------------------------------------------- attention scores


def _layer_patterns(adapter: ModelAdapter, tokens: Tensor, batch_size: int | None):
    names = [adapter.pattern_hook(l) for l in range(adapter.n_layers)]
    cache = adapter.run(tokens, names, batch_size)
    return [cache[n].float() for n in names]


def _row_mean(adapter, tokens, targets_fn, batch_size) -> Tensor:
    targets = targets_fn(tokens.to(adapter.device))
    rows = []
    for pattern in _layer_patterns(adapter, tokens, batch_size):
        total, count = target_mass(pattern, targets)
        rows.append(total / count.clamp(min=1))
    return torch.stack(rows)


def _probe(adapter, period, repeats, n_samples, seed, exclude=None) -> Tensor:
    return repeated_probe(
        adapter.d_vocab,
        period,
        repeats,
        n_samples,
        adapter.bos_token_id,
        seed,
        adapter.device,
        exclude=exclude,
    )


def prefix_matching_score(
    model,
    period: int = 25,
    repeats: int = 4,
    n_samples: int = 10,
    seed: int = 0,
    token_frequencies: Tensor | None = None,
    tokens: Tensor | None = None,
    batch_size: int | None = None,
) -> Tensor:
    """Prefix matching (Olsson et al. 2022, "Model Analysis Table" and appendix): on [BOS] +
    `period` random tokens × `repeats`, the attention each query in repeats 2+ pays to the
    tokens right after earlier copies of its own token, averaged over those queries. A perfect
    induction head scores 1.0, uniform attention about (repeats - 1)/(2·period·repeats).
    `token_frequencies` excludes the 10% most and least common tokens from the probe; `tokens`
    replaces the probe with your own sequences (targets are derived from them)."""
    adapter = ModelAdapter.wrap(model)
    if tokens is None:
        exclude = probe_exclusions(token_frequencies) if token_frequencies is not None else None
        tokens = _probe(adapter, period, repeats, n_samples, seed, exclude)
    return _row_mean(adapter, tokens, induction_targets, batch_size)


def duplicate_token_score(
    model,
    period: int = 25,
    repeats: int = 4,
    n_samples: int = 10,
    seed: int = 0,
    tokens: Tensor | None = None,
    batch_size: int | None = None,
) -> Tensor:
    """Mean attention from each query in repeats 2+ to the earlier copies of its own token
    (Wang et al. 2022's duplicate-token heads; TL's `duplicate_token_head` pattern)."""
    adapter = ModelAdapter.wrap(model)
    tokens = _probe(adapter, period, repeats, n_samples, seed) if tokens is None else tokens
    return _row_mean(adapter, tokens, duplicate_targets, batch_size)


def previous_token_score(
    model,
    period: int = 25,
    repeats: int = 4,
    n_samples: int = 10,
    seed: int = 0,
    tokens: Tensor | None = None,
    batch_size: int | None = None,
) -> Tensor:
    """Mean A[i, i-1] over content queries (Elhage et al. 2021's previous-token heads); the query
    right after BOS is left out, its only earlier key being BOS."""
    adapter = ModelAdapter.wrap(model)
    tokens = _probe(adapter, period, repeats, n_samples, seed) if tokens is None else tokens
    first = 1 + (adapter.bos_token_id is not None)
    rows = []
    for pattern in _layer_patterns(adapter, tokens, batch_size):
        total, count = previous_mass(pattern, first)
        rows.append(total / count)
    return torch.stack(rows)


def induction_score(
    model,
    convention: Literal["olsson", "arena", "tl"] = "olsson",
    period: int = 25,
    repeats: int = 2,
    n_samples: int = 10,
    seed: int = 0,
    tokens: Tensor | None = None,
) -> Tensor:
    """One attention statistic under three conventions, to compare with published numbers.

    - "olsson": prefix matching (above): mean over eligible queries only; perfect head = 1.
    - "arena": ARENA's `induction_attn_detector` on [BOS] + seq + seq: the mean of the pattern's
      diagonal at offset 1 - period over every query on it (including the first two, which have
      no earlier copy), so a perfect head scores about period / (period + 2).
    - "tl": TransformerLens `detect_head(..., "induction_head", error_measure="mul")`: attention on
      induction targets divided by all attention, over every query; ~0.5 for a perfect head on a
      twice-repeated sequence. `tokens` must then be what TL's `to_tokens` gives (BOS included).
    """
    adapter = ModelAdapter.wrap(model)
    if convention == "olsson":
        return prefix_matching_score(
            adapter, period, max(repeats, 2), n_samples, seed, tokens=tokens
        )
    if tokens is None:
        tokens = _probe(adapter, period, 2 if convention == "arena" else repeats, n_samples, seed)
    patterns = _layer_patterns(adapter, tokens, None)
    if convention == "arena":
        return torch.stack(
            [p.diagonal(offset=1 - period, dim1=-2, dim2=-1).mean((0, 2)) for p in patterns]
        )
    if convention == "tl":
        targets = induction_targets(tokens.to(adapter.device)).float()
        per_sample = [torch.einsum("bhqk,bqk->bh", p, targets) / p.sum((-2, -1)) for p in patterns]
        return torch.stack([s.mean(0) for s in per_sample])
    raise ValueError(f"convention must be 'olsson', 'arena' or 'tl', got {convention!r}.")


# ----------------------------------------------------------------------------- weight scores


def copying_score(model) -> Tensor:
    """Eigenvalue copying score Σλ / Σ|λ| of each head's full OV circuit W_E W_V W_O W_U
    (Elhage et al. 2021, "Copying / Primarily Positive Eigenvalues"; Olsson et al. 2022): +1 when
    every eigenvalue is positive (the head raises the logit of the token it attends to), -1 when
    all are negative. Computed from the d_head × d_head matrix W_O W_U W_E W_V, which has the
    same nonzero eigenvalues; eigenvalues may be complex, Σλ (the trace) is real."""
    adapter = ModelAdapter.wrap(model)
    if adapter.d_vocab_out != adapter.d_vocab:
        raise ValueError(
            f"copying_score needs d_vocab_out == d_vocab (a square OV circuit), got "
            f"{adapter.d_vocab_out} and {adapter.d_vocab}."
        )
    with torch.no_grad():
        unembed_embed = adapter.W_U @ adapter.W_E  # [d_model, d_model], shared by all heads
        circuit = adapter.W_O @ unembed_embed @ adapter.W_V  # [l, h, dh, dh]
        eig = torch.linalg.eigvals(circuit.double())
        score = eig.sum(-1).real / eig.abs().sum(-1).clamp(min=1e-30)
    return score.float()


def copying_from_cache(
    z: Tensor,
    pattern: Tensor,
    tokens: Tensor,
    rows: Tensor,
    W_O: Tensor,
    unembed: Tensor,
    candidates: Tensor,
    top_keys: int = 4,
) -> tuple[Tensor, int]:
    """Per-head sums of the empirical copying statistic over the query `rows` (`[batch, q]`
    bool) of one layer, and the number of rows; `z` is `[b, q, h, dh]`, `pattern` `[b, h, q, k]`.
    See `empirical_copying_score`."""
    b_idx, q_idx = rows.nonzero(as_tuple=True)
    n_cand = len(candidates)
    # direct logit effects [n, h, C] of each head's output z·W_O through `unembed`; W_O·U first:
    # h·d_head·d_model·C + n·h·d_head·C multiply-adds instead of n·h·d_model·C.
    out_unembed = torch.einsum("hdm,mc->hdc", W_O.float(), unembed[:, candidates].float())
    direct = torch.einsum("nhd,hdc->nhc", z[b_idx, q_idx].float(), out_unembed)
    size = max(int(candidates.max()), int(tokens.max())) + 1
    lookup = torch.full((size,), -1, dtype=torch.long, device=tokens.device)
    lookup[candidates] = torch.arange(n_cand, device=tokens.device)
    weights = pattern[b_idx, :, q_idx]  # [n, h, k] attention of each selected query
    top = weights.topk(min(top_keys, weights.shape[-1]), dim=-1)  # the most attended keys
    attended = lookup[tokens[b_idx]].gather(-1, top.indices.flatten(1)).view_as(top.indices)
    # Effects equal to within 1e-5 of the row's largest one are ties (float rounding): compare
    # them on that grid.
    grid = 1e-5 * direct.abs().amax(-1, keepdim=True).clamp(min=1e-30)
    direct = (direct / grid).round_()
    target = direct.gather(-1, attended.clamp(min=0))  # [n, h, top]
    # (#candidates gaining less - #gaining more) / (C - 1); the token itself contributes 0.
    # Tokens the unembedding cannot produce (id >= d_vocab_out) count as no preference.
    diff = target[..., None] - direct[:, :, None, :]
    stat = diff.sign_().sum(-1) / max(n_cand - 1, 1)
    stat = stat * (attended >= 0)
    share = top.values / top.values.sum(-1, keepdim=True).clamp(min=1e-30)
    return (share * stat).sum((0, 2)), len(b_idx)


def empirical_copying_score(
    model,
    period: int = 25,
    repeats: int = 4,
    n_samples: int = 10,
    seed: int = 0,
    max_candidates: int = 1024,
    max_queries: int | None = 256,
    top_keys: int = 4,
) -> Tensor:
    """Empirical copying, after Olsson et al. 2022's direct-path measure of copying: at queries in
    repeats 2+, each head's actual output is mapped through the direct path (W_U, with the final
    norm's weight folded in) to logit effects, and we ask whether the tokens it attends to gain
    more than other tokens. Normalisation (ours): for each of the query's `top_keys` most
    attended keys, P(that key's token gains more than a random other token) - P(it gains less),
    averaged with the keys' attention as weights; in [-1, 1]: +1 = the attended token is always
    boosted most, -1 = always suppressed most, 0 = no preference. It does not depend on the
    vocabulary size or the output's scale. Vocabularies over `max_candidates` ids are compared
    against that many sampled tokens; at most `max_queries` query rows are used."""
    adapter = ModelAdapter.wrap(model)
    tokens = _probe(adapter, period, repeats, n_samples, seed)
    rows = subsample_rows(induction_targets(tokens).any(-1), max_queries, seed)
    candidates = candidate_tokens(tokens, adapter.d_vocab_out, max_candidates, seed)
    names = [f(l) for l in range(adapter.n_layers) for f in (adapter.pattern_hook, adapter.z_hook)]
    cache = adapter.run(tokens, names)
    unembed, W_O = adapter.direct_unembed(), adapter.W_O
    out = []
    with torch.no_grad():
        for l in range(adapter.n_layers):
            total, count = copying_from_cache(
                cache[adapter.z_hook(l)],
                cache[adapter.pattern_hook(l)].float(),
                tokens,
                rows,
                W_O[l],
                unembed,
                candidates,
                top_keys,
            )
            out.append(total / max(count, 1))
    return torch.stack(out)


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
    return torch.where(later, scores, torch.full_like(scores, math.nan))


# ----------------------------------------------------------------------------- training metrics


def training_scores(model, period: int = 25, repeats: int = 4, n_samples: int = 10) -> dict:
    """Cheap scores logged while training, from one probe forward pass: per-head prefix matching
    and previous-token scores, the best prefix-matching head in layers >= 1 (induction needs an
    earlier layer) and the best previous-token head."""
    adapter = ModelAdapter.wrap(model)
    bos = adapter.bos_token_id is not None
    usable = adapter.n_ctx - bos
    period = min(period, usable // 2, adapter.d_vocab - bos)
    if period < 2:  # no repeated probe fits this context or vocabulary: the scores are undefined
        nan = [[math.nan] * adapter.n_heads for _ in range(adapter.n_layers)]
        return {
            "prefix_matching": nan,
            "previous_token": nan,
            "best_prefix_matching": math.nan,
            "best_previous_token": math.nan,
        }
    repeats = max(2, min(repeats, usable // period))
    tokens = _probe(adapter, period, repeats, n_samples, seed=0)
    targets = induction_targets(tokens)
    pm, prev = [], []
    for pattern in _layer_patterns(adapter, tokens, None):
        total, count = target_mass(pattern, targets)
        pm.append(total / count.clamp(min=1))
        total, count = previous_mass(pattern, 1 + bos)
        prev.append(total / count)
    pm, prev = torch.stack(pm), torch.stack(prev)
    later = pm[1:] if adapter.n_layers > 1 else pm
    return {
        "prefix_matching": pm.tolist(),
        "previous_token": prev.tolist(),
        "best_prefix_matching": later.max().item(),
        "best_previous_token": prev.max().item(),
    }
