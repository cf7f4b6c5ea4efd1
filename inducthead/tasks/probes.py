"""Probes and targets: synthetic repeated-token sequences and, for any token sequence, which keys
each query's induction / duplicate-token attention should land on. Token ids only; no model."""

from __future__ import annotations

import math
from dataclasses import dataclass

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


class ProbeFitError(ValueError):
    """No repeated-token probe fits the model's context or vocabulary."""


def fit_probe(
    n_ctx: int,
    d_vocab: int,
    bos: bool,
    period: int = 25,
    repeats: int = 4,
    min_period: int = 4,
    fit_vocab: bool = False,
) -> tuple[int, int]:
    """The (period, repeats) of the largest repeated-token probe like the one asked for that fits
    `n_ctx` (BOS included when `bos`): fewer repeats first (not below 2), then a shorter period;
    with `fit_vocab` also a period no longer than the non-BOS vocabulary (tokens within a period
    are distinct), with repeats refilled to the context. ProbeFitError, saying what would work,
    if no probe of period >= `min_period` fits, or the period needs more distinct tokens than
    the vocabulary has."""
    usable, content = n_ctx - bos, d_vocab - bos
    if content < min_period:
        raise ProbeFitError(
            f"d_vocab={d_vocab} has only {content} non-BOS tokens, but a repeated-token probe "
            f"needs at least {min_period} distinct tokens per period: this model cannot be probed."
        )
    if usable // 2 < min_period:
        raise ProbeFitError(
            f"n_ctx={n_ctx} is too short for a repeated-token probe: the smallest is "
            f"{'BOS + ' if bos else ''}2 repeats of period {min_period} ({2 * min_period + bos} "
            "tokens), so this model cannot be probed."
        )
    fitted_repeats = max(2, min(repeats, usable // period))
    fitted = min(period, usable // fitted_repeats)
    if fit_vocab:
        fitted = min(fitted, content)
    if content < fitted:
        raise ProbeFitError(
            f"d_vocab={d_vocab} has only {content} non-BOS tokens, fewer than the probe period "
            f"{fitted} (tokens within a period are distinct); pass period <= {content}."
        )
    return fitted, max(2, min(repeats, usable // fitted))


def coprime_partner(period: int) -> int:
    """A second probe period coprime to `period`, about 0.7·period (>= 3): a head keyed to one
    fixed distance cannot prefix-match on both."""
    for candidate in range(max(3, round(0.7 * period)), 2, -1):
        if math.gcd(candidate, period) == 1 and candidate != period:
            return candidate
    return period + 1


@dataclass(frozen=True)
class ProbePlan:
    """`detect`'s probes: `n_samples` sequences per period, all `length` content tokens long."""

    periods: tuple[int, ...]
    length: int  # content tokens per probe sequence (BOS excluded)
    repeats: int
    n_samples: int
    bos_token_id: int | None
    seed: int

    def tokens(self, d_vocab: int, device) -> tuple[Tensor, Tensor]:
        """The stacked probes of every period and each sequence's period index."""
        parts = [
            repeated_probe(
                d_vocab,
                p,
                None,
                self.n_samples,
                self.bos_token_id,
                self.seed + i,
                device,
                length=self.length,
            )
            for i, p in enumerate(self.periods)
        ]
        which = torch.arange(len(parts), device=device).repeat_interleave(self.n_samples)
        return torch.cat(parts), which


def plan_probe(
    n_ctx: int,
    d_vocab: int,
    bos_token_id: int | None,
    period: int = 25,
    repeats: int = 4,
    n_samples: int = 10,
    seed: int = 0,
) -> tuple[ProbePlan, list[str]]:
    """`detect`'s probe plan fitted to the model (`fit_probe`), at `period` and a coprime partner
    period; returns it with notes describing any change to what was asked."""
    if repeats < 2 or period < 4:
        raise ValueError(f"detect needs period >= 4 and repeats >= 2, got {period} and {repeats}.")
    fitted, fitted_repeats = fit_probe(n_ctx, d_vocab, bos_token_id is not None, period, repeats)
    notes = []
    if (fitted, fitted_repeats) != (period, repeats):
        notes.append(
            f"probe shortened to fit n_ctx={n_ctx}: period {fitted} (asked {period}), repeats "
            f"{fitted_repeats} (asked {repeats})."
        )
    periods = (fitted, coprime_partner(fitted))
    length = fitted * fitted_repeats
    return ProbePlan(periods, length, fitted_repeats, n_samples, bos_token_id, seed), notes
