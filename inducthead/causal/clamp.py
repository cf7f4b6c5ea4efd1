"""Clamps: hooks that force a head to do its part of the induction circuit perfectly, for use
during training (`train(..., hooks=clamp(...))`) or analysis (`run_with_hooks`).

After Singh et al. 2024 ("What needs to go right for an induction head?"), who clamp subcircuits
during training to see which one gates the phase change. Their clamps fix activations to chosen
values; ours force the *ideal* behaviour of each role, which is this toolkit's design (provisional
until checked against the paper's exact protocol):

- previous_token: the head's pattern is one-hot on position i - 1 (position 0 attends to itself);
- induction: the head's pattern is one-hot on the position right after the most recent earlier
  occurrence of the query's token (position 0, the BOS / first token, when there is none);
- copy: the head's own output `z @ W_O` is replaced by `copy_strength * sum_k A[q, k] u[t_k]`,
  where A is the head's (unclamped or clamped) pattern, t_k the token at key k and u[t] the row t
  of pinv(W_U): the residual vector whose direct-path logits are the least-squares closest to
  a one-hot on t (exactly one-hot when d_model >= d_vocab_out; the final norm, if any, is not
  inverted). `copy_strength` is thus the logit boost of the attended token. W_U is read, not
  trained, through the clamp. Gradients still reach the head's pattern (its W_Q, W_K).

Patterns forced by a clamp are constants: the clamped head's W_Q and W_K get no gradient.
Token ids are recovered inside the forward pass from `hook_embed` (an exact row of W_E), so the
hooks work in `train`, which passes only hooks; embedding rows must be distinct.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from inducthead.analysis.adapters import ModelAdapter
from inducthead.analysis.heads import check_heads, head_label

__all__ = ["clamp", "Clamp", "previous_token_pattern", "induction_pattern"]


def previous_token_pattern(n_pos: int, device=None) -> Tensor:
    """`[q, k]` one-hot on k = q - 1 (q = 0 attends to itself)."""
    target = (torch.arange(n_pos, device=device) - 1).clamp(min=0)
    return F.one_hot(target, n_pos).float()


def induction_pattern(tokens: Tensor) -> Tensor:
    """`[batch, q, k]` one-hot on the position after the most recent earlier copy of token q
    (k = j + 1 for the largest j < q with tokens[j] == tokens[q]; k = 0 when there is none)."""
    n = tokens.shape[1]
    pos = torch.arange(n, device=tokens.device)
    earlier = (tokens[:, :, None] == tokens[:, None, :]) & (pos[None, :] < pos[:, None])
    target = (earlier * (pos + 1)).max(-1).values  # 0 when no earlier copy
    return F.one_hot(target, n).float()


def tokens_from_embedding(embedded: Tensor, W_E: Tensor) -> Tensor:
    """Token ids whose W_E rows `embedded` `[batch, pos, d_model]` holds (exactly)."""
    W = W_E.detach().to(embedded.dtype)
    scores = embedded.detach() @ W.T - 0.5 * (W * W).sum(-1)
    ids = scores.argmax(-1)
    if not torch.equal(W[ids], embedded.detach()):
        raise RuntimeError(
            "clamp: could not read the token ids back from hook_embed (embedding rows are not "
            "distinct, or something edits hook_embed before the clamp); induction and copy "
            "clamps need them."
        )
    return ids


class Clamp(list):
    """A list of `(hook_name, fn)` pairs (pass it to `train(hooks=...)`, `run_with_hooks` or
    `model.hooks`), with the clamped heads as attributes."""

    def __init__(self, hooks, previous_token, induction, copy, copy_strength):
        super().__init__(hooks)
        self.previous_token = previous_token
        self.induction = induction
        self.copy = copy
        self.copy_strength = copy_strength

    def __repr__(self) -> str:
        parts = [
            f"{role}={[head_label(h) for h in heads]}"
            for role, heads in (
                ("previous_token", self.previous_token),
                ("induction", self.induction),
                ("copy", self.copy),
            )
            if heads
        ]
        return f"Clamp({', '.join(parts)}; {len(self)} hooks)"


def clamp(
    model,
    previous_token=(),
    induction=(),
    copy=(),
    copy_strength: float = 10.0,
) -> Clamp:
    """Hooks forcing perfect previous-token attention, perfect induction attention and/or perfect
    copying on the given heads (see the module docstring).

    >>> hooks = ih.clamp(model, previous_token=[(0, 0)])
    >>> run = ih.train(model, task, config, out_dir, hooks=hooks)
    """
    adapter = ModelAdapter.wrap(model)
    prev = check_heads(previous_token, adapter, allow_empty=True)
    ind = check_heads(induction, adapter, allow_empty=True)
    cop = check_heads(copy, adapter, allow_empty=True)
    both = set(prev) & set(ind)
    if both:
        raise ValueError(
            f"{', '.join(head_label(h) for h in both)}: a head cannot be clamped to both "
            "previous-token and induction attention."
        )
    if not (prev or ind or cop):
        raise ValueError("clamp: name at least one head (previous_token, induction or copy).")
    state: dict[str, Tensor] = {}
    hooks: list = []
    if ind or cop:

        def read_tokens(embedded, hook):
            state["tokens"] = tokens_from_embedding(embedded, adapter.W_E)
            return embedded

        hooks.append(("hook_embed", read_tokens))

    for layer in sorted({l for l, _ in prev + ind}):
        hooks.append(
            (
                adapter.pattern_hook(layer),
                _pattern_clamp(
                    [h for l, h in prev if l == layer], [h for l, h in ind if l == layer], state
                ),
            )
        )
    for layer in sorted({l for l, _ in cop}):
        heads = [h for l, h in cop if l == layer]
        hooks += _copy_clamp(adapter, layer, heads, state, copy_strength)
    return Clamp(hooks, prev, ind, cop, copy_strength)


def _pattern_clamp(prev: list[int], ind: list[int], state: dict):
    def hook(pattern: Tensor, hook) -> Tensor:
        pattern = pattern.clone()
        n = pattern.shape[-1]
        if prev:
            pattern[:, prev] = previous_token_pattern(n, pattern.device).to(pattern.dtype)
        if ind:
            forced = induction_pattern(state["tokens"]).to(pattern.dtype)
            pattern[:, ind] = forced[:, None]
        return pattern

    return hook


def _copy_clamp(adapter: ModelAdapter, layer: int, heads: list[int], state: dict, strength):
    """Zero the heads' z (their W_O output) and add the copy vectors at hook_attn_out."""
    patterns: dict[str, Tensor] = {}

    def save_pattern(pattern, hook):
        patterns["p"] = pattern[:, heads]  # kept in the graph: the pattern still learns
        return pattern

    def zero_z(z, hook):
        z = z.clone()
        z[:, :, heads] = 0.0
        return z

    def add_copy(attn_out, hook):
        W_U = adapter.W_U.detach().float()
        directions = torch.linalg.pinv(W_U).to(attn_out.dtype)  # [d_vocab_out, d_model]
        tokens = state["tokens"].clamp(max=directions.shape[0] - 1)
        written = directions[tokens]  # [batch, key, d_model]
        copy = torch.einsum("bhqk,bkm->bqm", patterns["p"].to(attn_out.dtype), written)
        return attn_out + strength * copy

    return [
        (adapter.pattern_hook(layer), save_pattern),
        (adapter.z_hook(layer), zero_z),
        (f"blocks.{layer}.hook_attn_out", add_copy),
    ]
