"""The data causal experiments run on: repeated-token batches by default, or the user's batch,
token ids or task, as a `Batch` whose mask marks the targets induction can predict."""

from __future__ import annotations

import torch
from torch import Tensor

from inducthead.analysis.adapters import ModelAdapter
from inducthead.tasks import Batch, RepeatedTokens, Task

Data = Batch | Tensor | Task | None


def default_data(
    model, n_samples: int = 64, seq_len: int | None = None, seed: int = 0, max_period: int = 40
) -> Batch:
    """`repeated_token_batch` for any hooked model (ours, a bridge, TL 3)."""
    return repeated_token_batch(ModelAdapter.wrap(model), n_samples, seq_len, seed, max_period)


def repeated_token_batch(
    adapter: ModelAdapter,
    n_samples: int = 64,
    seq_len: int | None = None,
    seed: int = 0,
    max_period: int = 40,
) -> Batch:
    """The data causal experiments use when none is given: `RepeatedTokens` for the model —
    [BOS] + random tokens with a segment repeated from a random offset, period drawn from
    4..`max_period` (all periods, including those `RepeatedTokens` holds out from training;
    fewer where the context or vocabulary is smaller), `seq_len` = min(n_ctx, 128) tokens,
    `n_samples` sequences, loss mask on the induction-predictable targets. Deterministic in
    `seed`."""
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be an int >= 1, got {n_samples!r}.")
    bos = adapter.bos_token_id
    seq_len = min(adapter.n_ctx, 128) if seq_len is None else seq_len
    content = seq_len + (bos is None)
    n_content = adapter.d_vocab - (bos is not None)
    max_period = max(2, min(max_period, content // 2, n_content))
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


def as_batch(adapter: ModelAdapter, data: Data) -> Batch:
    """`data` (None, a `Batch`, token ids or a `Task`) as a `Batch` on the model's device."""
    if data is None:
        return repeated_token_batch(adapter)
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
