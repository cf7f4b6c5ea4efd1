"""Data and metrics for causal experiments (ablation, patching, verify).

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
from inducthead.model import token_nll
from inducthead.tasks import Batch, RepeatedTokens, Task

__all__ = [
    "default_data",
    "as_batch",
    "batch_from_tokens",
    "METRICS",
    "icl_score",
    "icl_positions",
    "loss_by_position",
    "no_context_baseline",
]

Data = Batch | Tensor | Task | None
Metric = Callable[[Tensor, Batch], float]


# ----------------------------------------------------------------------------- data


def default_data(model, n_samples: int = 64, seq_len: int | None = None, seed: int = 0) -> Batch:
    """The data causal experiments use when none is given: `RepeatedTokens` for the model —
    [BOS] + random tokens with a segment repeated from a random offset, period drawn from
    4..40 (all periods, including those `RepeatedTokens` holds out from training), `seq_len`
    = min(n_ctx, 128) tokens, `n_samples` sequences, loss mask on the induction-predictable
    targets. Deterministic in `seed`."""
    adapter = ModelAdapter.wrap(model)
    bos = adapter.bos_token_id
    seq_len = min(adapter.n_ctx, 128) if seq_len is None else seq_len
    content = seq_len + (bos is None)
    n_content = adapter.d_vocab - (bos is not None)
    max_period = max(2, min(40, content // 2, n_content))
    task = RepeatedTokens(
        d_vocab=adapter.d_vocab,
        seq_len=seq_len,
        min_period=min(4, max_period),
        max_period=max_period,
        held_out_periods=(),
        bos_token_id=bos,
        distinct=True,
    )
    return task.sample(n_samples, seed=seed, device=adapter.device)


def batch_from_tokens(tokens: Tensor) -> Batch:
    """A `Batch` running exactly `tokens` `[batch, pos]` (as TransformerLens would): targets are
    `tokens[:, 1:]` (the last position has none: `info["n_targets"]` = pos - 1 and it is never
    scored); mask = targets induction can predict (position i, where an earlier j < i has
    tokens[j] = tokens[i] and tokens[j + 1] = tokens[i + 1])."""
    if tokens.shape[1] < 3:
        raise ValueError(f"need at least 3 tokens per sequence, got {tokens.shape[1]}.")
    cur, nxt = tokens[:, :-1], tokens[:, 1:]
    earlier = torch.ones(cur.shape[1], cur.shape[1], dtype=torch.bool, device=tokens.device)
    match = (cur[:, :, None] == cur[:, None, :]) & (nxt[:, :, None] == nxt[:, None, :])
    mask = (match & earlier.tril(-1)).any(-1)
    last = torch.zeros_like(mask[:, :1])
    targets = torch.cat([nxt, tokens[:, -1:]], 1)  # the last target is a placeholder
    n_targets = torch.full((tokens.shape[0],), tokens.shape[1] - 1, device=tokens.device)
    return Batch(tokens, targets, torch.cat([mask, last], 1), {"n_targets": n_targets})


def n_targets(batch: Batch) -> int:
    """Positions of `batch` that have a target (all, except for `batch_from_tokens`)."""
    n = batch.info.get("n_targets")
    return batch.tokens.shape[1] if n is None else int(n.min())


def as_batch(model, data: Data) -> Batch:
    """`data` (None, a `Batch`, token ids or a `Task`) as a `Batch` on the model's device."""
    adapter = ModelAdapter.wrap(model)
    if data is None:
        return default_data(adapter)
    if isinstance(data, Batch):
        adapter.check_tokens(data.tokens)  # range and length checks
        return data.to(adapter.device)
    if isinstance(data, Task):
        return data.eval_batch(64, device=adapter.device)
    if isinstance(data, Tensor):
        return batch_from_tokens(adapter.check_tokens(data))
    raise TypeError(
        f"data must be None, an inducthead Batch, a Task or token ids [batch, pos]; got "
        f"{type(data).__name__}."
    )


def describe(data: Data) -> str:
    if data is None:
        return "default repeated-token data"
    tokens = data.tokens if isinstance(data, Batch) else data
    if isinstance(tokens, Tensor):
        return f"{tokens.shape[0]} x {tokens.shape[1]} tokens"
    return type(data).__name__


def forward(model, tokens: Tensor, hooks=()) -> Tensor:
    """Logits of `tokens` with forward `hooks` active (no gradients)."""
    adapter = ModelAdapter.wrap(model)
    with torch.no_grad():
        return adapter.model.run_with_hooks(tokens, fwd_hooks=list(hooks))


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
    nll = token_nll(forward(adapter, batch.tokens), batch.targets)
    return nll[:, : n_targets(batch)].mean(0).cpu()


def icl_score(model, data: Data = None, early: int = 50, late: int = 500) -> float:
    """In-context-learning score (Olsson et al. 2022, "in-context learning score"): the loss at
    token index `late` minus the loss at index `early`, averaged over sequences. Negative = the
    model predicts later tokens better from context (in-context learning); about 0 = none.
    Indices scale to shorter sequences (`icl_positions`). Default data: `default_data`."""
    adapter = ModelAdapter.wrap(model)
    batch = as_batch(adapter, data)
    logits = forward(adapter, batch.tokens)
    return icl_metric(early, late)(logits, batch)


def no_context_baseline(batch: Batch) -> dict[str, float]:
    """Loss and accuracy of the best predictor that ignores the context, on the masked targets:
    the entropy of their unigram distribution and the frequency of the most common one (on
    uniform random tokens: ln(#tokens) and 1/#tokens)."""
    targets = batch.targets[batch.mask]
    counts = torch.bincount(targets).float()
    p = counts[counts > 0] / counts.sum()
    return {"loss": float(-(p * p.log()).sum()), "accuracy": float(p.max())}
