"""`inducthead.detect(model)`: which heads are induction heads, with the evidence.

One batched forward pass over two repeated-token probes (period 25 and a period coprime to it)
caches only attention patterns and head outputs; prefix matching, previous-token, duplicate-token
and empirical copying scores all come from it, the eigenvalue copying and K-composition scores from
the weights. A head is an induction head when it prefix-matches on every probe period AND copies
what it attends to; prefix matching with negative copying is an anti-induction head.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import torch
from torch import Tensor
from transformer_lens import FactoredMatrix

from inducthead.analysis import scores as S
from inducthead.analysis.adapters import ModelAdapter
from inducthead.analysis.report import DetectionReport, Thresholds

__all__ = ["detect", "DetectionReport", "Thresholds", "plan_probe"]


@dataclass(frozen=True)
class ProbePlan:
    periods: tuple[int, ...]
    length: int  # content tokens per probe sequence (BOS excluded)
    repeats: int
    n_samples: int
    bos_token_id: int | None
    seed: int


def coprime_partner(period: int) -> int:
    """A second probe period coprime to `period`, about 0.7·period (>= 3): a head keyed to one
    fixed distance cannot prefix-match on both."""
    for candidate in range(max(3, round(0.7 * period)), 2, -1):
        if math.gcd(candidate, period) == 1 and candidate != period:
            return candidate
    return period + 1


def plan_probe(adapter: ModelAdapter, period: int, repeats: int, n_samples: int, seed: int):
    """Fit the probe into the model's context: lower `repeats` (not below 2), then `period`;
    returns the plan and the warnings describing any change."""
    bos = adapter.bos_token_id is not None
    usable = adapter.n_ctx - bos
    notes = []
    if repeats < 2 or period < 4:
        raise ValueError(f"detect needs period >= 4 and repeats >= 2, got {period} and {repeats}.")
    fitted_repeats = max(2, min(repeats, usable // period))
    fitted_period = min(period, usable // fitted_repeats)
    if fitted_period < 4:
        raise ValueError(
            f"no probe fits in n_ctx={adapter.n_ctx}: the smallest probe is "
            f"{'BOS + ' if bos else ''}2 repeats of period 4 ({2 * 4 + bos} tokens). Largest "
            f"allowed values here: period={max(usable // 2, 0)}, repeats=2."
        )
    if adapter.d_vocab - bos < fitted_period:
        raise ValueError(
            f"d_vocab={adapter.d_vocab} has only {adapter.d_vocab - bos} non-BOS tokens, fewer "
            f"than the probe period {fitted_period} (tokens within a period are distinct); pass "
            "period <= "
            f"{adapter.d_vocab - bos}."
        )
    if (fitted_period, fitted_repeats) != (period, repeats):
        notes.append(
            f"probe shortened to fit n_ctx={adapter.n_ctx}: period {fitted_period} (asked "
            f"{period}), repeats {fitted_repeats} (asked {repeats})."
        )
    length = fitted_period * fitted_repeats
    periods = (fitted_period, coprime_partner(fitted_period))
    plan = ProbePlan(periods, length, fitted_repeats, n_samples, adapter.bos_token_id, seed)
    return plan, notes


def _probe_tokens(adapter: ModelAdapter, plan: ProbePlan) -> tuple[Tensor, Tensor]:
    """Stacked probes for every period (same length) and each sample's period index."""
    parts = [
        S.repeated_probe(
            adapter.d_vocab,
            p,
            None,
            plan.n_samples,
            plan.bos_token_id,
            plan.seed + i,
            adapter.device,
            length=plan.length,
        )
        for i, p in enumerate(plan.periods)
    ]
    which = torch.arange(len(parts), device=adapter.device).repeat_interleave(plan.n_samples)
    return torch.cat(parts), which


def detect(
    model,
    *,
    n_samples: int = 10,
    period: int = 25,
    repeats: int = 4,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    thresholds: Thresholds | None = None,
    tokens: Tensor | None = None,
    max_queries: int = 256,
    max_candidates: int = 1024,
    bos_token_id: int | None | str = "auto",
) -> DetectionReport:
    """Find induction heads in any hooked transformer (ours, TransformerBridge, TL 3).

    Probes: [BOS] + `period` distinct random tokens repeated `repeats` times, and the same length
    at a second period coprime to `period`, `n_samples` each (models without a BOS token are
    probed without one). Probes that do not fit `n_ctx` are shortened (repeats first, not below
    2, then the period) with a warning. `tokens` (`[batch, pos]` ids) replaces the random probes
    with your own sequences; targets are derived from them. `batch_size` bounds memory (all at
    once by default); `max_queries`/`max_candidates` bound the empirical copying score's cost.
    `bos_token_id`: "auto" (our config's BOS, or the tokenizer's for TransformerLens models),
    None to probe without BOS, or an id.
    """
    adapter = ModelAdapter.wrap(model, bos_token_id)
    if device is not None:
        adapter.model.to(device)
    adapter.check_finite()
    thresholds = thresholds or Thresholds()
    notes: list[str] = []
    if tokens is None:
        plan, notes = plan_probe(adapter, period, repeats, n_samples, seed)
        probe, which = _probe_tokens(adapter, plan)
        probe_info = asdict(plan)
    else:
        probe = adapter.check_tokens(tokens)
        which = torch.zeros(len(probe), dtype=torch.long, device=adapter.device)
        plan = None
        probe_info = {
            "periods": ["user tokens"],
            "length": probe.shape[1],
            "n_samples": len(probe),
            "bos_token_id": adapter.bos_token_id,
            "seed": seed,
        }
    for note in notes:
        warnings.warn(note, stacklevel=2)
    n_probes = int(which.max()) + 1
    result = _attention_pass(
        adapter, probe, which, n_probes, batch_size, seed, max_queries, max_candidates
    )
    pm_by_period = result.pop("prefix_matching_by_probe")
    scores = {"prefix_matching": pm_by_period.min(0).values, **result}
    labels = plan.periods if plan is not None else ["user tokens"]
    for label, pm in zip(labels, pm_by_period, strict=True):
        scores[f"prefix_matching_p{label}" if plan is not None else "prefix_matching_user"] = pm
    scores["copying_eigen"] = _copying_eigen(adapter, notes)
    k_comp, sources = _k_composition(adapter, scores["previous_token"])
    scores["k_composition"] = k_comp
    return DetectionReport(
        scores={k: v.detach().float().cpu() for k, v in scores.items()},
        thresholds=thresholds,
        probe=probe_info,
        model_name=adapter.name,
        k_composition_source=sources,
        warnings=notes,
    )


def _attention_pass(adapter, probe, which, n_probes, batch_size, seed, max_queries, max_candidates):
    """Every attention-derived score from one forward pass (in chunks of `batch_size`)."""
    L, H = adapter.n_layers, adapter.n_heads
    dev = adapter.device
    first_prev = 1 + (adapter.bos_token_id is not None)
    induction = S.induction_targets(probe)
    duplicate = S.duplicate_targets(probe)
    copy_rows = S.subsample_rows(induction.any(-1), max_queries, seed)
    candidates = S.candidate_tokens(probe, adapter.d_vocab_out, max_candidates, seed)
    unembed, W_O = adapter.direct_unembed(), adapter.W_O
    sums = {k: torch.zeros(L, H, device=dev) for k in ("prev", "dup", "copy")}
    counts = {k: torch.zeros(L, device=dev) for k in ("prev", "dup", "copy")}
    pm_sum = torch.zeros(n_probes, L, H, device=dev)
    pm_count = torch.zeros(n_probes, device=dev)
    names = [f(l) for l in range(L) for f in (adapter.pattern_hook, adapter.z_hook)]
    size = batch_size or len(probe)
    for start in range(0, len(probe), size):
        sl = slice(start, start + size)
        cache = adapter.run(probe[sl], names)
        with torch.no_grad():
            for l in range(L):
                pattern = cache[adapter.pattern_hook(l)].float()
                for p in range(n_probes):
                    mine = which[sl] == p
                    if mine.any():
                        total, count = S.target_mass(pattern[mine], induction[sl][mine])
                        pm_sum[p, l] += total
                        pm_count[p] += count if l == 0 else 0
                for key, (total, count) in {
                    "prev": S.previous_mass(pattern, first_prev),
                    "dup": S.target_mass(pattern, duplicate[sl]),
                    "copy": S.copying_from_cache(
                        cache[adapter.z_hook(l)],
                        pattern,
                        probe[sl],
                        copy_rows[sl],
                        W_O[l],
                        unembed,
                        candidates,
                    ),
                }.items():
                    sums[key][l] += total
                    counts[key][l] += count
    per = {k: sums[k] / counts[k].clamp(min=1)[:, None] for k in sums}
    return {
        "prefix_matching_by_probe": pm_sum / pm_count.clamp(min=1)[:, None, None],
        "previous_token": per["prev"],
        "duplicate_token": per["dup"],
        "copying_empirical": per["copy"],
    }


def _copying_eigen(adapter: ModelAdapter, notes: list[str]) -> Tensor:
    if adapter.d_vocab_out != adapter.d_vocab:
        notes.append("copying_eigen is undefined when d_vocab_out != d_vocab; reported as NaN.")
        return torch.full((adapter.n_layers, adapter.n_heads), math.nan)
    return S.copying_score(adapter)


def _k_composition(adapter: ModelAdapter, previous: Tensor):
    """Each head's K-composition (baseline subtracted) with the strongest previous-token head of
    the earlier layers (NaN in layer 0), and which head that was. Only these L·H pairs are
    computed, not all (L·H)² of `scores.composition_scores`."""
    L, H = adapter.n_layers, adapter.n_heads
    out = torch.full((L, H), math.nan)
    sources: list[tuple[int, int] | None] = [None] * L
    if L < 2:
        return out, sources
    for l in range(1, L):
        flat = int(previous[:l].flatten().argmax())
        sources[l] = (flat // H, flat % H)
    src_layer = torch.tensor([sources[l][0] for l in range(1, L)])
    src_head = torch.tensor([sources[l][1] for l in range(1, L)])
    with torch.no_grad():
        W_V, W_O = adapter.W_V[src_layer, src_head], adapter.W_O[src_layer, src_head]  # [L-1, ...]
        left = FactoredMatrix(W_V[:, None], W_O[:, None])  # one sender per receiving layer
        right = FactoredMatrix(adapter.W_K[1:], adapter.W_Q[1:].transpose(-2, -1))  # (W_Q W_Kᵀ)ᵀ
        comp = S.factored_composition(left, right)  # [L-1, H]
    baseline = S.random_composition_baseline(adapter.d_model, adapter.d_head, "K")
    out[1:] = (comp - baseline).float().cpu()
    return out, sources
