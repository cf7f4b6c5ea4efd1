"""Next-token cross-entropy: the one implementation the model, the trainer and the causal metrics
share (TransformerLens's language-modelling loss, computed in float32)."""

from __future__ import annotations

from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor


class Output(NamedTuple):
    """`forward(..., return_type="both")`: `(logits, loss)`, named as in TransformerLens 3."""

    logits: Tensor
    loss: Tensor


def token_nll(logits: Tensor, targets: Tensor) -> Tensor:
    """Negative log-likelihood of `targets` `[...]` under `logits` `[..., d_vocab_out]`, per
    position, in float32 (no reduction)."""
    nll = F.cross_entropy(logits.flatten(0, -2).float(), targets.flatten(), reduction="none")
    return nll.view(targets.shape)


def next_token_loss(
    logits: Tensor,
    tokens: Tensor,
    per_token: bool = False,
    attention_mask: Tensor | None = None,
) -> Tensor:
    """Cross-entropy of predicting `tokens[:, 1:]` from `logits[:, :-1]` (TL's LM loss): the mean,
    or `[batch, pos - 1]` with `per_token`. With a padding `attention_mask` only predictions of a
    token from a token count (0 elsewhere in the per-token loss), as in TL 3."""
    nll = token_nll(logits[:, :-1], tokens[:, 1:])
    if attention_mask is None:
        return nll if per_token else nll.mean()
    both = attention_mask[:, :-1].bool() & attention_mask[:, 1:].bool()
    nll = nll.masked_fill(~both, 0.0)
    return nll if per_token else nll.sum() / both.sum().clamp(min=1)


def masked_loss(
    logits: Tensor, targets: Tensor, mask: Tensor, denominator: Tensor | None = None
) -> Tensor:
    """Mean of `token_nll` over the positions `mask` keeps, without a host sync. `denominator`
    replaces the mask count (data-parallel ranks divide by the global batch's count)."""
    nll = token_nll(logits, targets)
    mask = mask.float()
    count = mask.sum().clamp(min=1) if denominator is None else denominator
    return (nll * mask).sum() / count
