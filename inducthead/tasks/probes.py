"""Probes and targets: synthetic repeated-token sequences and, for any token sequence, which keys
each query's induction / duplicate-token attention should land on. Token ids only; no model."""

from __future__ import annotations

import torch
from torch import Tensor

from inducthead.tasks.base import generator


def probe_exclusions(token_frequencies: Tensor, fraction: float = 0.1) -> Tensor:
    """Ids of the `fraction` most and `fraction` least frequent tokens, which Olsson et al. 2022
    leave out of prefix-matching probes (the fraction is ours: the paper gives none)."""
    freq = torch.as_tensor(token_frequencies, dtype=torch.float)
    k = int(len(freq) * fraction)
    order = freq.argsort()
    return torch.cat([order[:k], order[len(freq) - k :]]) if k else order[:0]


def repeated_probe(
    d_vocab: int,
    period: int = 25,
    repeats: float = 4,
    n_samples: int = 10,
    bos_token_id: int | None = None,
    seed: int = 0,
    device="cpu",
    exclude: Tensor | None = None,
    length: int | None = None,
) -> Tensor:
    """`[n_samples, (BOS) + length]` probe: `period` random tokens drawn without replacement (so
    the induction target is unambiguous), repeated to `length` tokens (default period·repeats;
    the last repeat may be partial). `exclude`: ids never drawn (BOS always is)."""
    banned = torch.zeros(d_vocab, dtype=torch.bool, device=device)
    if bos_token_id is not None:
        banned[bos_token_id] = True
    if exclude is not None and len(exclude):
        banned[torch.as_tensor(exclude, device=device).long()] = True
    allowed = (~banned).nonzero().squeeze(-1)
    if len(allowed) < period:
        raise ValueError(
            f"a probe of period {period} needs {period} distinct tokens drawn without replacement, "
            f"but only {len(allowed)} of d_vocab={d_vocab} are allowed; lower the period."
        )
    g = generator(seed, device)
    order = torch.rand(n_samples, len(allowed), generator=g, device=device).argsort(-1)
    segment = allowed[order[:, :period]]
    length = length if length is not None else int(period * repeats)
    tokens = segment[:, torch.arange(length, device=device) % period]
    if bos_token_id is not None:
        tokens = torch.cat([torch.full_like(tokens[:, :1], bos_token_id), tokens], dim=1)
    return tokens


def induction_targets(tokens: Tensor) -> Tensor:
    """`[batch, q, k]`: key k is right after an earlier occurrence of query q's token."""
    same = tokens[:, :, None] == tokens[:, None, :]  # [b, q, j]: tokens[q] == tokens[j]
    n = tokens.shape[1]
    q = torch.arange(n, device=tokens.device)[:, None]
    k = torch.arange(n, device=tokens.device)[None, :]
    shifted = torch.zeros_like(same)
    shifted[:, :, 1:] = same[:, :, :-1]  # k ↔ j = k - 1
    return shifted & (k - 1 < q) & (k >= 1)


def duplicate_targets(tokens: Tensor) -> Tensor:
    """`[batch, q, k]`: key k < q holds the same token as query q."""
    same = tokens[:, :, None] == tokens[:, None, :]
    return same & torch.ones_like(same[0]).tril(-1)


def target_mass(pattern: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Per-head sum over (batch, eligible query) of the attention mass on `targets`, and the
    number of eligible rows (rows with at least one target). `pattern`: `[batch, head, q, k]`."""
    rows = targets.any(-1)  # [b, q]
    mass = torch.einsum("bhqk,bqk->bhq", pattern, targets.to(pattern.dtype))
    return (mass * rows[:, None]).sum((0, 2)), rows.sum()


def previous_mass(pattern: Tensor, first_query: int = 1) -> tuple[Tensor, Tensor]:
    """Per-head sum of A[i, i-1] over queries i >= first_query, and the number of rows."""
    diag = pattern.diagonal(offset=-1, dim1=-2, dim2=-1)[..., first_query - 1 :]
    return diag.sum((0, 2)), torch.tensor(diag.shape[0] * diag.shape[2])


def candidate_tokens(tokens: Tensor, d_vocab_out: int, max_candidates: int, seed: int) -> Tensor:
    """Output tokens to compare the attended token against: all `d_vocab_out` ids when there are
    at most `max_candidates`, else the probe's tokens plus a seeded uniform sample of the rest (an
    unbiased estimate of the whole-vocabulary statistic)."""
    if d_vocab_out <= max_candidates:
        return torch.arange(d_vocab_out, device=tokens.device)
    g = generator(seed, "cpu")
    sample = torch.randperm(d_vocab_out, generator=g)[:max_candidates].to(tokens.device)
    return torch.unique(torch.cat([tokens[tokens < d_vocab_out], sample]))


def subsample_rows(rows: Tensor, max_rows: int | None, seed: int) -> Tensor:
    """Keep at most `max_rows` of the True entries of `rows` (seeded, uniformly)."""
    if max_rows is None or int(rows.sum()) <= max_rows:
        return rows
    flat = rows.flatten().nonzero().squeeze(-1)
    g = generator(seed, "cpu")
    keep = flat[torch.randperm(len(flat), generator=g)[:max_rows].to(flat.device)]
    out = torch.zeros_like(rows.flatten())
    out[keep] = True
    return out.view_as(rows)


def probe_fit(n_ctx: int, period: int, repeats: int, bos: bool) -> int:
    """Largest whole number of repeats (<= `repeats`) of `period` that fits in `n_ctx`."""
    return max(0, min(repeats, (n_ctx - bos) // period))
