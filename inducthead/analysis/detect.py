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
from dataclasses import asdict

import torch
from torch import Tensor

from inducthead.analysis.adapters import ModelAdapter
from inducthead.analysis.attention import attention_pass
from inducthead.analysis.composition import k_composition_with_previous
from inducthead.analysis.copying import EmpiricalCopying, eigen_copying
from inducthead.analysis.detection import DetectionResult, Thresholds
from inducthead.tasks.probes import plan_probe

__all__ = ["detect", "detect_heads", "DetectionResult", "Thresholds"]


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
) -> DetectionResult:
    """Find induction heads in any hooked transformer (ours, TransformerBridge, TL 3).

    Probes: [BOS] + `period` distinct random tokens repeated `repeats` times, and the same length
    at a second period coprime to `period`, `n_samples` each (models without a BOS token are
    probed without one). Probes that do not fit `n_ctx` are shortened (repeats first, not below
    2, then the period) with a warning. `tokens` (`[batch, pos]` ids) replaces the random probes
    with your own sequences; targets are derived from them. `batch_size` bounds memory (all at
    once by default); `max_queries`/`max_candidates` bound the empirical copying score's cost.
    `bos_token_id`: "auto" (our config's BOS, or the tokenizer's for TransformerLens models),
    None to probe without BOS, or an id. `device` moves the model there first (in place); by
    default it runs where the model is. Scores come back on the CPU.
    """
    adapter = ModelAdapter.wrap(model, bos_token_id)
    if device is not None:
        adapter.model.to(device)
    return detect_heads(
        adapter,
        n_samples=n_samples,
        period=period,
        repeats=repeats,
        batch_size=batch_size,
        seed=seed,
        thresholds=thresholds,
        tokens=tokens,
        max_queries=max_queries,
        max_candidates=max_candidates,
    )


def detect_heads(
    adapter: ModelAdapter,
    *,
    n_samples: int = 10,
    period: int = 25,
    repeats: int = 4,
    batch_size: int | None = None,
    seed: int = 0,
    thresholds: Thresholds | None = None,
    tokens: Tensor | None = None,
    max_queries: int = 256,
    max_candidates: int = 1024,
) -> DetectionResult:
    """`detect` on a model already wrapped in its adapter (what `verify` calls)."""
    adapter.check_finite()
    thresholds = thresholds or Thresholds()
    notes: list[str] = []
    if tokens is None:
        plan, notes = plan_probe(
            adapter.n_ctx, adapter.d_vocab, adapter.bos_token_id, period, repeats, n_samples, seed
        )
        probe, which = plan.tokens(adapter.d_vocab, adapter.device)
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
    copying = EmpiricalCopying(adapter, probe, max_queries, max_candidates, seed)
    tallies = attention_pass(
        adapter,
        probe,
        ("induction", "previous", "duplicate"),
        groups=which,
        n_groups=int(which.max()) + 1,
        batch_size=batch_size,
        with_z=True,
        on_layer=copying.add,
    )
    pm_by_period = tallies["induction"].mean()
    scores = {
        "prefix_matching": pm_by_period.min(0).values,
        "previous_token": tallies["previous"].mean(pooled=True),
        "duplicate_token": tallies["duplicate"].mean(pooled=True),
        "copying_empirical": copying.mean(),
    }
    labels = plan.periods if plan is not None else ["user tokens"]
    for label, pm in zip(labels, pm_by_period, strict=True):
        scores[f"prefix_matching_p{label}" if plan is not None else "prefix_matching_user"] = pm
    scores["copying_eigen"] = _copying_eigen(adapter, notes)
    k_comp, sources = k_composition_with_previous(adapter, scores["previous_token"])
    scores["k_composition"] = k_comp
    return DetectionResult(
        scores={k: v.detach().float().cpu() for k, v in scores.items()},
        thresholds=thresholds,
        probe=probe_info,
        model_name=adapter.name,
        source=adapter.source,
        k_composition_source=sources,
        warnings=notes,
    )


def _copying_eigen(adapter: ModelAdapter, notes: list[str]) -> Tensor:
    if adapter.d_vocab_out != adapter.d_vocab:
        notes.append("copying_eigen is undefined when d_vocab_out != d_vocab; reported as NaN.")
        return torch.full((adapter.n_layers, adapter.n_heads), math.nan)
    return eigen_copying(adapter)
