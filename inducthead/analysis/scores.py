"""Per-head attention scores, tokenizer-free: each returns a `[n_layers, n_heads]` tensor on the
CPU.

Scores are computed on synthetic probes (token ids only, optional BOS) from the attention
patterns of one batched forward pass that caches nothing but the hooks it needs
(`analysis.attention`). Targets are derived from the tokens themselves, so every score also works
on user-supplied sequences: the induction target of query q is every key k right after an earlier
occurrence of q's token (k - 1 < q, tokens[k - 1] == tokens[q]). Each score's docstring cites its
definition. Copying and composition scores live in `analysis.copying` and `analysis.composition`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from inducthead.analysis.adapters import ModelAdapter
from inducthead.analysis.attention import attention_pass, layer_patterns
from inducthead.tasks.probes import ProbeFitError, fit_probe, induction_targets, probe_exclusions


def _score(adapter: ModelAdapter, tokens: Tensor, kind: str, batch_size: int | None) -> Tensor:
    tally = attention_pass(adapter, tokens, (kind,), batch_size=batch_size)[kind]
    return tally.mean()[0].cpu()


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
        tokens = adapter.probe(period, repeats, n_samples, seed, exclude)
    return _score(adapter, tokens, "induction", batch_size)


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
    return _probe_score(model, "duplicate", period, repeats, n_samples, seed, tokens, batch_size)


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
    return _probe_score(model, "previous", period, repeats, n_samples, seed, tokens, batch_size)


def _probe_score(model, kind, period, repeats, n_samples, seed, tokens, batch_size) -> Tensor:
    adapter = ModelAdapter.wrap(model)
    tokens = adapter.probe(period, repeats, n_samples, seed) if tokens is None else tokens
    return _score(adapter, tokens, kind, batch_size)


def induction_score(
    model,
    convention: Literal["olsson", "arena", "tl"] = "olsson",
    period: int | None = None,
    repeats: int = 2,
    n_samples: int | None = None,
    seed: int = 0,
    tokens: Tensor | None = None,
) -> Tensor:
    """One attention statistic under three conventions, to compare with published numbers.

    - "olsson": prefix matching (above): mean over eligible queries only; perfect head = 1.
      Probe: [BOS] + `period` (25) distinct tokens x `repeats`, `n_samples` (10) sequences.
    - "arena": ARENA's `induction_attn_detector` on ARENA's probe (`arena_probe`): [BOS] +
      `period` (50) tokens drawn uniformly with replacement from the whole vocabulary, twice,
      `n_samples` (1) sequences, drawn as `torch.manual_seed(seed)` then `torch.randint` would:
      the number a notebook that seeded the same way printed. The statistic is the mean of the
      pattern's diagonal at offset 1 - period over every query on it (including the first two,
      which have no earlier copy), so a perfect head scores about period / (period + 2).
    - "tl": TransformerLens `detect_head(..., "induction_head", error_measure="mul")`: attention on
      induction targets divided by all attention, over every query; ~0.5 for a perfect head on a
      twice-repeated sequence. `tokens` must then be what TL's `to_tokens` gives (BOS included).
    """
    adapter = ModelAdapter.wrap(model)
    if convention not in ("olsson", "arena", "tl"):
        raise ValueError(f"convention must be 'olsson', 'arena' or 'tl', got {convention!r}.")
    arena = convention == "arena"
    period = period or (50 if arena else 25)
    n_samples = n_samples or (1 if arena else 10)
    if tokens is None:
        if arena:
            tokens = arena_probe(adapter, period, n_samples, seed)
        else:
            tokens = adapter.probe(period, max(repeats, 2), n_samples, seed)
    tokens = tokens.to(adapter.device)
    if convention == "olsson":
        return _score(adapter, tokens, "induction", None)
    patterns = layer_patterns(adapter, tokens)
    if arena:
        per_layer = [p.diagonal(offset=1 - period, dim1=-2, dim2=-1).mean((0, 2)) for p in patterns]
    else:
        targets = induction_targets(tokens).float()
        per_sample = [torch.einsum("bhqk,bqk->bh", p, targets) / p.sum((-2, -1)) for p in patterns]
        per_layer = [s.mean(0) for s in per_sample]
    return torch.stack(per_layer).cpu()


def arena_probe(model, seq_len: int = 50, batch: int = 1, seed: int = 0) -> Tensor:
    """ARENA's `generate_repeated_tokens`: [BOS] + `seq_len` tokens drawn uniformly with
    replacement from `range(d_vocab)`, repeated once, `[batch, 1 + 2 * seq_len]`; the draw is
    the one `torch.manual_seed(seed); torch.randint(0, d_vocab, (batch, seq_len))` makes. A model
    without BOS gets token 0 in its place, as ARENA's models have."""
    adapter = ModelAdapter.wrap(model)
    g = torch.Generator().manual_seed(seed)
    half = torch.randint(0, adapter.d_vocab, (batch, seq_len), generator=g)
    bos = torch.full((batch, 1), adapter.bos_token_id or 0)
    return torch.cat([bos, half, half], dim=1).to(adapter.device)


def training_scores(model, period: int = 25, repeats: int = 4, n_samples: int = 10) -> dict:
    """Cheap scores logged while training, from one probe forward pass: per-head prefix matching
    and previous-token scores, the best prefix-matching head in layers >= 1 (induction needs an
    earlier layer) and the best previous-token head. NaN when no probe of period >= 2 fits the
    model's context and vocabulary."""
    adapter = ModelAdapter.wrap(model)
    bos = adapter.bos_token_id is not None
    try:
        period, repeats = fit_probe(
            adapter.n_ctx, adapter.d_vocab, bos, period, repeats, min_period=2, fit_vocab=True
        )
    except ProbeFitError:  # the scores are undefined
        nan = [[math.nan] * adapter.n_heads for _ in range(adapter.n_layers)]
        return {
            "prefix_matching": nan,
            "previous_token": nan,
            "best_prefix_matching": math.nan,
            "best_previous_token": math.nan,
        }
    tokens = adapter.probe(period, repeats, n_samples, seed=0)
    tallies = attention_pass(adapter, tokens, ("induction", "previous"))
    pm, prev = (tallies[k].mean()[0] for k in ("induction", "previous"))
    later = pm[1:] if adapter.n_layers > 1 else pm
    return {
        "prefix_matching": pm.tolist(),
        "previous_token": prev.tolist(),
        "best_prefix_matching": later.max().item(),
        "best_previous_token": prev.max().item(),
    }
