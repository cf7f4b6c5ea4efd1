"""Head scores from attention patterns on synthetic repeated-token probes (no tokenizer needed).

Every function returns a `[n_layers, n_heads]` tensor. Definitions follow shared/DESIGN.md
("Metric definitions") and cite their papers.
"""

from __future__ import annotations

import torch
from torch import Tensor

from inducthead.tasks.base import generator

PATTERN_HOOK = "blocks.{}.attn.hook_pattern"


def repeated_probe(
    d_vocab: int,
    period: int = 25,
    repeats: int = 4,
    n_samples: int = 10,
    bos_token_id: int | None = None,
    seed: int = 0,
    device="cpu",
    exclude: Tensor | None = None,
) -> Tensor:
    """`[n_samples, (bos) + period * repeats]` probe: a random segment of `period` distinct tokens
    repeated `repeats` times (Olsson et al. 2022, "prefix matching"). Distinct tokens inside a
    period make the induction target unambiguous. `exclude`: token ids never drawn (BOS, and
    optionally the most and least frequent tokens, as Olsson does)."""
    banned = torch.zeros(d_vocab, dtype=torch.bool, device=device)
    if bos_token_id is not None:
        banned[bos_token_id] = True
    if exclude is not None:
        banned[exclude.to(device)] = True
    allowed = (~banned).nonzero().squeeze(-1)
    if len(allowed) < period:
        raise ValueError(
            f"a probe of period {period} needs {period} distinct tokens, but only {len(allowed)} "
            f"of d_vocab={d_vocab} are allowed; lower the period."
        )
    g = generator(seed, device)
    order = torch.rand(n_samples, len(allowed), generator=g, device=device).argsort(-1)
    segment = allowed[order[:, :period]]
    tokens = segment.repeat(1, repeats)
    if bos_token_id is not None:
        tokens = torch.cat([torch.full_like(tokens[:, :1], bos_token_id), tokens], dim=1)
    return tokens


def prefix_matching_targets(period: int, repeats: int, bos: bool) -> tuple[Tensor, Tensor]:
    """For the probe above: `targets[q, k]` is True where key k is right AFTER an earlier copy of
    the query's token; `rows[q]` marks eligible queries (repeats 2 and later)."""
    start = int(bos)
    n = start + period * repeats
    q = torch.arange(n)[:, None]
    k = torch.arange(n)[None, :]
    gap = q - k + 1  # key k = q - m·period + 1 for some m >= 1
    targets = (q >= start + period) & (k >= start + 1) & (k <= q) & (gap % period == 0) & (gap > 0)
    return targets, targets.any(-1)


def patterns(model, tokens: Tensor) -> Tensor:
    """Attention patterns of every layer, `[n_layers, batch, n_heads, q, k]`, caching only them."""
    n_layers = model.cfg.n_layers
    names = [PATTERN_HOOK.format(l) for l in range(n_layers)]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=names, return_type=None)
    return torch.stack([cache[name] for name in names]).float()


def prefix_matching_from_patterns(pattern: Tensor, period: int, repeats: int, bos: bool) -> Tensor:
    """Mean over eligible queries of the attention mass on the tokens right after earlier copies
    of the query's token; a perfect induction head scores 1.0 (Olsson et al. 2022, section 2)."""
    targets, rows = prefix_matching_targets(period, repeats, bos)
    targets, rows = targets.to(pattern.device), rows.to(pattern.device)
    mass = (pattern * targets).sum(-1)  # [layers, batch, heads, q]
    return mass[..., rows].mean(dim=(1, 3))


def previous_token_from_patterns(pattern: Tensor, bos: bool) -> Tensor:
    """Mean attention from each query to the token just before it, A[i, i-1], over queries after
    the first content token (Olsson et al. 2022; Elhage et al. 2021)."""
    diag = pattern.diagonal(offset=-1, dim1=-2, dim2=-1)  # [layers, batch, heads, q - 1]
    return diag[..., int(bos) :].mean(dim=(1, 3))


def prefix_matching_score(
    model, period: int = 25, repeats: int = 4, n_samples: int = 10, seed: int = 0
) -> Tensor:
    """Olsson et al. 2022's prefix-matching score per head, `[n_layers, n_heads]`, on
    [BOS] + `period` random distinct tokens × `repeats`."""
    bos = getattr(model.cfg, "bos_token_id", None)
    tokens = repeated_probe(
        model.cfg.d_vocab, period, repeats, n_samples, bos, seed, device=model.W_E.device
    )
    return prefix_matching_from_patterns(patterns(model, tokens), period, repeats, bos is not None)


def previous_token_score(model, n_samples: int = 10, seq_len: int | None = None, seed: int = 0):
    """Mean A[i, i-1] per head, `[n_layers, n_heads]`, on random-token sequences."""
    bos = getattr(model.cfg, "bos_token_id", None)
    length = min(model.cfg.n_ctx, seq_len or 101) - (bos is not None)
    period = min(length, model.cfg.d_vocab - (bos is not None))
    tokens = repeated_probe(
        model.cfg.d_vocab, period, 1, n_samples, bos, seed, device=model.W_E.device
    )
    return previous_token_from_patterns(patterns(model, tokens), bos is not None)


def probe_fit(n_ctx: int, period: int, repeats: int, bos: bool) -> int:
    """Largest repeat count (<= `repeats`) for which the probe fits in `n_ctx` (0 if none)."""
    return max(0, min(repeats, (n_ctx - bos) // period))


def training_scores(model, period: int = 25, repeats: int = 4, n_samples: int = 10) -> dict:
    """Cheap per-head scores logged during training, from one probe forward pass: prefix matching
    and previous-token per head, plus the best prefix-matching head in layers >= 1 (induction
    needs an earlier layer) and the best previous-token head."""
    cfg = model.cfg
    bos = getattr(cfg, "bos_token_id", None)
    usable = cfg.n_ctx - (bos is not None)
    period = max(2, min(period, usable // 2, cfg.d_vocab - (bos is not None)))
    repeats = probe_fit(cfg.n_ctx, period, repeats, bos is not None)
    tokens = repeated_probe(
        cfg.d_vocab, period, repeats, n_samples, bos, seed=0, device=model.W_E.device
    )
    pattern = patterns(model, tokens)
    pm = prefix_matching_from_patterns(pattern, period, repeats, bos is not None)
    prev = previous_token_from_patterns(pattern, bos is not None)
    later = pm[1:] if cfg.n_layers > 1 else pm
    return {
        "prefix_matching": pm.tolist(),
        "previous_token": prev.tolist(),
        "best_prefix_matching": later.max().item(),
        "best_previous_token": prev.max().item(),
    }
