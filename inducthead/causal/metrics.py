"""Metrics for causal experiments (ablation, patching, verify); their data is `causal.data`.

Metrics take `(logits, batch)` and return a float; `logits` are the model's output on
`batch.tokens` and `batch.targets[b, i]` is the token to predict at position i. The built-in
metrics score only the positions of `batch.mask`: on repeated-token data, the targets induction
can predict (the second and later repeats).

- "loss": mean next-token cross-entropy on the masked positions;
- "accuracy": top-1 accuracy on the masked positions;
- "logit_diff": logit of the correct token minus the mean logit of all other tokens, averaged over
  the masked positions (the induction analogue of IOI's logit difference, which needs no hand-picked
  wrong answer);
- "icl_score": Olsson et al. 2022's in-context-learning score, `icl_score` below.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from inducthead.analysis.adapters import ModelAdapter
from inducthead.causal.data import Data, as_batch, describe, n_targets
from inducthead.model import token_nll
from inducthead.tasks import Batch

__all__ = [
    "METRICS",
    "forward",
    "evaluate",
    "resolve_metrics",
    "icl_score",
    "icl_positions",
    "loss_by_position",
    "no_context_baseline",
]

Metric = Callable[[Tensor, Batch], float]


def forward(model, tokens: Tensor, hooks=()) -> Tensor:
    """Logits of `tokens` with forward `hooks` active (no gradients), for any hooked model."""
    return ModelAdapter.wrap(model).logits(tokens, hooks)


# ----------------------------------------------------------------------------- metrics


def repeated_loss(logits: Tensor, batch: Batch) -> float:
    return token_nll(logits, batch.targets)[batch.mask].mean().item()


def repeated_accuracy(logits: Tensor, batch: Batch) -> float:
    return (logits.argmax(-1) == batch.targets)[batch.mask].float().mean().item()


def logit_diff(logits: Tensor, batch: Batch) -> float:
    logits = logits.float()
    right = logits.gather(-1, batch.targets[..., None]).squeeze(-1)
    others = (logits.sum(-1) - right) / (logits.shape[-1] - 1)
    return (right - others)[batch.mask].mean().item()


def icl_positions(n_positions: int, early: int = 50, late: int = 500) -> tuple[int, int]:
    """The token indices `icl_score` compares in sequences of `n_positions` predictions.

    Olsson et al. 2022 use 500 and 50. When the sequence is too short for `late`, both indices
    scale by (n_positions - 1) / late: `late` becomes the last position and `early` keeps its
    ratio (1:10 by default; 128-token demo data compares positions 13 and 127)."""
    if not 0 <= early < late:
        raise ValueError(f"icl_score needs 0 <= early < late, got early={early}, late={late}.")
    last = n_positions - 1
    if late <= last:
        return early, late
    if last < 1:
        raise ValueError(f"icl_score needs at least 2 positions, got {n_positions}.")
    scaled = min(last - 1, round(early * last / late))
    return scaled, last


def icl_metric(early: int = 50, late: int = 500) -> Metric:
    """Metric form of `icl_score` (every position counts, not only the masked ones)."""

    def icl_score(logits: Tensor, batch: Batch) -> float:
        lo, hi = icl_positions(n_targets(batch), early, late)
        nll = token_nll(logits, batch.targets)
        return (nll[:, hi].mean() - nll[:, lo].mean()).item()

    return icl_score


METRICS: dict[str, Metric] = {
    "loss": repeated_loss,
    "accuracy": repeated_accuracy,
    "logit_diff": logit_diff,
    "icl_score": icl_metric(),
}


def resolve_metrics(metric) -> dict[str, Metric]:
    """A metric name, a callable, or a list / dict of them, as `{name: metric}`."""
    if isinstance(metric, Mapping):
        items = list(metric.items())
    else:
        if isinstance(metric, str) or callable(metric):
            metric = [metric]
        items = []
        for m in metric:
            if isinstance(m, str):
                items.append((m, m))
            else:
                items.append((getattr(m, "__name__", "metric"), m))
    out: dict[str, Metric] = {}
    for name, m in items:
        if isinstance(m, str):
            if m not in METRICS:
                raise ValueError(f"unknown metric {m!r}; built-in metrics: {', '.join(METRICS)}.")
            m = METRICS[m]
        if not callable(m):
            raise TypeError(f"metric {name!r} must be a name or a callable(logits, batch).")
        out[name] = m
    if not out:
        raise ValueError("no metric given.")
    return out


def evaluate(metrics: dict[str, Metric], logits: Tensor, batch: Batch) -> dict[str, float]:
    """Every metric on one set of logits, as floats; ValueError for NaN or a non-scalar."""
    out = {}
    for name, fn in metrics.items():
        value = fn(logits, batch)
        try:
            value = float(value)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(
                f"metric {name!r} must return a float (a scalar), got {type(value).__name__}."
            ) from None
        if math.isnan(value):
            raise ValueError(
                f"metric {name!r} returned NaN on {describe(batch)} (for the built-in metrics: "
                f"the batch has {int(batch.mask.sum())} positions in its mask; repeated-token "
                "metrics need data with repeats)."
            )
        out[name] = value
    return out


# ----------------------------------------------------------------------------- ICL


def loss_by_position(model, data: Data = None) -> Tensor:
    """Mean next-token loss at each position `[pos]` over the batch, every position counted: the
    curve behind `icl_score` (Olsson et al. 2022, "per-token loss")."""
    adapter = ModelAdapter.wrap(model)
    batch = as_batch(adapter, data)
    nll = token_nll(adapter.logits(batch.tokens), batch.targets)
    return nll[:, : n_targets(batch)].mean(0).cpu()


def icl_score(model, data: Data = None, early: int = 50, late: int = 500) -> float:
    """In-context-learning score (Olsson et al. 2022, "in-context learning score"): the loss at
    token index `late` minus the loss at index `early`, averaged over sequences. Negative = the
    model predicts later tokens better from context (in-context learning); about 0 = none.
    Indices scale to shorter sequences (`icl_positions`). Default data:
    `causal.data.default_data`."""
    adapter = ModelAdapter.wrap(model)
    batch = as_batch(adapter, data)
    logits = adapter.logits(batch.tokens)
    return icl_metric(early, late)(logits, batch)


def no_context_baseline(batch: Batch) -> dict[str, float]:
    """Loss and accuracy of the best predictor that ignores the context, on the masked targets:
    the entropy of their unigram distribution and the frequency of the most common one (on
    uniform random tokens: ln(#tokens) and 1/#tokens)."""
    targets = batch.targets[batch.mask]
    counts = torch.bincount(targets).float()
    p = counts[counts > 0] / counts.sum()
    return {"loss": float(-(p * p.log()).sum()), "accuracy": float(p.max())}
