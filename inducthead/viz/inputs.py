"""What the views take: one token sequence (ids or text), its labels and a choice of heads,
checked against the model, with errors that name what is wrong and what to pass."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from inducthead.analysis import Head, ModelAdapter, all_heads, check_heads

__all__ = ["token_ids", "token_labels", "select_heads", "head_patterns"]


def token_ids(adapter: ModelAdapter, tokens) -> Tensor:
    """`tokens` as a 1-D long tensor on the CPU: ids (a list, array or tensor `[pos]` or
    `[1, pos]`), or text for a model with a tokenizer (tokenized with its `to_tokens`, BOS as the
    model prepends it, never truncated). ValueError naming both lengths when longer than n_ctx."""
    if isinstance(tokens, str):
        model = adapter.model
        if getattr(model, "tokenizer", None) is None or not callable(
            getattr(model, "to_tokens", None)
        ):
            raise ValueError(
                f"{adapter.name} has no tokenizer, so text cannot be shown; pass token ids, or "
                "set one with model.set_tokenizer(tokenizer)."
            )
        ids = model.to_tokens(tokens, truncate=False)
    else:
        if isinstance(tokens, (list, tuple)):
            tokens = np.asarray(tokens)
        ids = torch.as_tensor(tokens)
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise TypeError(f"tokens must be integer ids, got dtype {ids.dtype}.")
    if ids.ndim == 2 and ids.shape[0] == 1:
        ids = ids[0]
    if ids.ndim != 1:
        raise ValueError(
            f"tokens must be one sequence, ids of shape [pos] or [1, pos]; got shape "
            f"{tuple(ids.shape)}."
        )
    if len(ids) > adapter.n_ctx:
        raise ValueError(
            f"tokens have {len(ids)} positions but {adapter.name} has n_ctx={adapter.n_ctx}; "
            f"pass at most {adapter.n_ctx} tokens."
        )
    adapter.check_tokens(ids[None])  # non-empty, ids in [0, d_vocab)
    return ids.long().cpu()


def token_labels(adapter: ModelAdapter, ids: Tensor, labels: Sequence | None) -> list[str]:
    """`labels` as strings, one per token (ValueError naming both lengths otherwise); by default
    the model's tokenizer's strings (`to_str_tokens`), else the ids as strings."""
    if labels is None:
        model = adapter.model
        if getattr(model, "tokenizer", None) is not None and callable(
            getattr(model, "to_str_tokens", None)
        ):
            return [str(s) for s in model.to_str_tokens(ids)]
        return [str(int(t)) for t in ids]
    if isinstance(labels, str):
        raise TypeError("labels must be a list of strings, one per token, not one string.")
    labels = [str(s) for s in labels]
    if len(labels) != len(ids):
        raise ValueError(
            f"labels has {len(labels)} entries but tokens has {len(ids)}; give one label per token."
        )
    return labels


def select_heads(adapter: ModelAdapter, layer=None, heads=None) -> list[Head]:
    """`heads` (`(layer, head)` tuples or "L1H4" names) when given, else every head of `layer`
    (an int, negative counting from the end, or several), else every head of the model."""
    if heads is not None:
        return check_heads(heads, adapter)
    if layer is None:
        return all_heads(adapter.n_layers, adapter.n_heads)
    layers = [layer] if isinstance(layer, (int, np.integer)) else list(layer)
    out = []
    for l in layers:
        if isinstance(l, bool) or not isinstance(l, (int, np.integer)):
            raise TypeError(f"layer must be an int or a list of ints, got {l!r}.")
        if not -adapter.n_layers <= l < adapter.n_layers:
            raise ValueError(
                f"layer {l} does not exist: {adapter.name} has layers 0..{adapter.n_layers - 1}."
            )
        l = int(l) % adapter.n_layers
        out += [Head(l, h) for h in range(adapter.n_heads)]
    if not out:
        raise ValueError("no layer given; pass layer=None for every layer.")
    return list(dict.fromkeys(out))


def head_patterns(adapter: ModelAdapter, ids: Tensor, heads: Iterable[Head]) -> Tensor:
    """`[len(heads), q, k]` attention patterns of `heads` on `ids` (float32, CPU), from one
    forward pass caching only the layers' `hook_pattern`s."""
    heads = list(heads)
    layers = sorted({l for l, _ in heads})
    cache = adapter.run(ids[None], [adapter.pattern_hook(l) for l in layers])
    return torch.stack([cache[adapter.pattern_hook(l)][0, h].float().cpu() for l, h in heads])
