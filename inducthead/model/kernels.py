"""Scaled dot-product attention that `torch.func.vmap` runs as one kernel call.

PyTorch has no vmap batching rule for the CPU flash-attention kernel, so under vmap (as in
`train_many`) it falls back to a Python-level loop over the vmapped models, and the backward of
that loop zero-fills a full-size gradient for every model: O(K²) memory traffic for K models
(measured: a third of a K = 8 demo step). `folded_sdpa` carries its own vmap rule instead: the
vmapped dimension is folded into the batch dimension (attention never mixes batch rows), one
`scaled_dot_product_attention` call runs on `[K·batch, heads, pos, d_head]`, and autograd
differentiates that call as usual. Outside vmap it computes exactly what
`F.scaled_dot_product_attention` computes (backward by recomputation; only `train_many` uses it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _batched_first(t: Tensor | None, dim: int | None, n: int) -> Tensor | None:
    if t is None:
        return None
    return t.movedim(dim, 0) if dim is not None else t.expand(n, *t.shape)


class _FoldedSDPA(torch.autograd.Function):
    generate_vmap_rule = False

    @staticmethod
    def forward(q, k, v, attn_mask, is_causal, scale):
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale
        )

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, k, v, attn_mask, is_causal, scale = inputs
        ctx.save_for_backward(q, k, v, attn_mask)
        ctx.is_causal, ctx.scale = is_causal, scale

    @staticmethod
    def backward(ctx, grad):
        q, k, v, attn_mask = ctx.saved_tensors
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_() for t in (q, k, v)]
            mask = attn_mask
            if mask is not None and ctx.needs_input_grad[3]:
                mask = mask.detach().requires_grad_()
                leaves.append(mask)
            out = F.scaled_dot_product_attention(
                *leaves[:3], attn_mask=mask, is_causal=ctx.is_causal, scale=ctx.scale
            )
            grads = torch.autograd.grad(out, leaves, grad)
        return grads[0], grads[1], grads[2], grads[3] if len(grads) > 3 else None, None, None

    @staticmethod
    def vmap(info, in_dims, q, k, v, attn_mask, is_causal, scale):
        n = info.batch_size
        q, k, v = (_batched_first(t, d, n) for t, d in zip((q, k, v), in_dims[:3], strict=True))
        batch = q.shape[1]
        if attn_mask is not None and in_dims[3] is not None:
            # per-model mask [n, ..., q, k]: broadcast over each model's batch rows, then fold
            mask = attn_mask.movedim(in_dims[3], 0)
            mask = mask.reshape(n, *[1] * (q.ndim - mask.ndim), *mask.shape[1:])
            attn_mask = mask.expand(n, batch, *q.shape[2:-1], k.shape[-2]).flatten(0, 1)
        out = F.scaled_dot_product_attention(
            q.flatten(0, 1),
            k.flatten(0, 1),
            v.flatten(0, 1),
            attn_mask=attn_mask,
            is_causal=is_causal,
            scale=scale,
        )
        return out.unflatten(0, (n, batch)), 0


def folded_sdpa(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
) -> Tensor:
    """`F.scaled_dot_product_attention(q, k, v, attn_mask, is_causal=..., scale=...)` (inputs
    `[batch, heads, pos, d_head]`) with a vmap rule that folds the vmapped dim into the batch."""
    return _FoldedSDPA.apply(q, k, v, attn_mask, is_causal, scale)
