"""Multi-head causal self-attention with TransformerLens 3's parameter and hook names, and the
positional schemes that act inside it (rotary, relative, ALiBi).

Parameter shapes follow TL: `W_Q[h]` is `[d_model, d_head]`, `W_O[h]` is `[d_head, d_model]`.
Hook shapes follow TL: `hook_q/k/v/z` are `[batch, pos, head, d_head]`,
`hook_attn_scores/pattern` are `[batch, head, query_pos, key_pos]`.
"""

from __future__ import annotations

import math

import einops
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from inducthead.model.config import HookedTransformerConfig
from inducthead.model.kernels import folded_sdpa


def optional_bias(use_bias: bool, *shape: int) -> nn.Parameter | None:
    """A zero-initialised bias parameter, or None for bias-free layers (`use_bias=False`)."""
    return nn.Parameter(torch.zeros(*shape)) if use_bias else None


def rotary_sin_cos(cfg: HookedTransformerConfig) -> tuple[Tensor, Tensor]:
    """TL's rotary sin/cos tables `[n_ctx, rotary_dim]`: pairs (i, i + d/2), or (2i, 2i + 1)
    if adjacent."""
    dim = cfg.rotary_dim
    freq = cfg.rotary_base ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    pattern = "d -> (d 2)" if cfg.rotary_adjacent_pairs else "d -> (2 d)"
    freq = einops.repeat(freq, pattern)
    angles = torch.arange(cfg.n_ctx, dtype=torch.float64)[:, None] / freq[None, :]
    return angles.sin().float(), angles.cos().float()


def alibi_slopes(n_heads: int) -> Tensor:
    """ALiBi head slopes (Press et al. 2022, section 3): geometric from 2^(-8/n), extended for
    head counts that are not powers of two as in the paper's reference implementation."""

    def power_of_two_slopes(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    closest = 2 ** math.floor(math.log2(n_heads))
    slopes = power_of_two_slopes(closest)
    if closest < n_heads:
        slopes += power_of_two_slopes(2 * closest)[0::2][: n_heads - closest]
    return torch.tensor(slopes)


class Attention(nn.Module):
    """Multi-head causal self-attention, one einsum per projection (no per-head loops).

    Fast path: when nothing hooks `hook_attn_scores` or `hook_pattern`, the pattern is never
    materialised and `F.scaled_dot_product_attention` runs (flash / memory-efficient kernels on
    CUDA). Otherwise scores and pattern are computed explicitly so hooks can read and edit them.
    Both paths compute the same function (tested to 1e-5).
    """

    # train_many runs the model under torch.func.vmap: it sets this so the fast path folds the
    # vmapped models into one attention call (`inducthead.model.kernels`).
    fold_vmap = False

    def __init__(self, cfg: HookedTransformerConfig):
        super().__init__()
        self.cfg = cfg
        h, m, d = cfg.n_heads, cfg.d_model, cfg.d_head
        self.W_Q = nn.Parameter(torch.empty(h, m, d))
        self.W_K = nn.Parameter(torch.empty(h, m, d))
        self.W_V = nn.Parameter(torch.empty(h, m, d))
        self.W_O = nn.Parameter(torch.empty(h, d, m))
        self.b_Q = optional_bias(cfg.use_bias, h, d)
        self.b_K = optional_bias(cfg.use_bias, h, d)
        self.b_V = optional_bias(cfg.use_bias, h, d)
        self.b_O = optional_bias(cfg.use_bias, m)
        kind = cfg.positional_embedding_type
        if kind == "relative":
            # b_rel[h, o]: learned score bias for a key o = i - j positions back (o < window).
            self.b_rel = nn.Parameter(torch.zeros(h, cfg.relative_window))
        if kind == "alibi":
            self.register_buffer("alibi_slopes", alibi_slopes(h), persistent=False)
        if kind == "rotary":
            sin, cos = rotary_sin_cos(cfg)
            self.register_buffer("rotary_sin", sin, persistent=False)
            self.register_buffer("rotary_cos", cos, persistent=False)
            self.hook_rot_q = HookPoint()
            self.hook_rot_k = HookPoint()
        self.hook_q = HookPoint()
        self.hook_k = HookPoint()
        self.hook_v = HookPoint()
        self.hook_attn_scores = HookPoint()
        self.hook_pattern = HookPoint()
        self.hook_z = HookPoint()
        if cfg.use_attn_result:
            self.hook_result = HookPoint()

    # --- positions -------------------------------------------------------------------------
    def position_bias(self, q_len: int, k_len: int, device: torch.device) -> Tensor | None:
        """Additive score bias `[head, q, k]` for relative/alibi positions (None otherwise).

        Causal masking is applied separately; entries for j > i are irrelevant here."""
        kind = self.cfg.positional_embedding_type
        if kind not in ("relative", "alibi"):
            return None
        offset = torch.arange(q_len, device=device)[:, None] - torch.arange(k_len, device=device)
        if kind == "alibi":
            return -self.alibi_slopes[:, None, None] * offset.clamp(min=0)
        window = self.b_rel.shape[1]
        # embedding lookup (deterministic backward) of each offset's bias: [q, k, head]
        bias = F.embedding(offset.clamp(0, window - 1), self.b_rel.T).permute(2, 0, 1)
        return bias.masked_fill(offset >= window, float("-inf"))

    def rotate(self, x: Tensor) -> Tensor:
        """Rotary embedding on the first `rotary_dim` features of `[batch, pos, head, d_head]`."""
        pos, dim = x.shape[1], self.cfg.rotary_dim
        x_rot, x_pass = x[..., :dim], x[..., dim:]
        if self.cfg.rotary_adjacent_pairs:
            flipped = torch.stack((-x_rot[..., 1::2], x_rot[..., 0::2]), dim=-1).flatten(-2)
        else:
            half = dim // 2
            flipped = torch.cat((-x_rot[..., half:], x_rot[..., :half]), dim=-1)
        sin = self.rotary_sin[:pos, None, :].to(x.dtype)
        cos = self.rotary_cos[:pos, None, :].to(x.dtype)
        return torch.cat((x_rot * cos + flipped * sin, x_pass), dim=-1)

    # --- forward ---------------------------------------------------------------------------
    def _project(self, x: Tensor, W: Tensor, b: Tensor | None) -> Tensor:
        if x.ndim == 4:  # split qkv input: [batch, pos, head, d_model]
            out = torch.einsum("bphm,hmd->bphd", x, W)
        else:
            out = torch.einsum("bpm,hmd->bphd", x, W)
        return out if b is None else out + b

    def pattern_needed(self) -> bool:
        """True when a hook reads or edits scores/pattern, so the explicit path must run."""
        return any(
            hp._forward_hooks or hp._backward_hooks or hp._forward_pre_hooks
            for hp in (self.hook_attn_scores, self.hook_pattern)
        )

    def forward(self, query_input: Tensor, key_input: Tensor, value_input: Tensor) -> Tensor:
        q = self.hook_q(self._project(query_input, self.W_Q, self.b_Q))
        k = self.hook_k(self._project(key_input, self.W_K, self.b_K))
        v = self.hook_v(self._project(value_input, self.W_V, self.b_V))
        if self.cfg.positional_embedding_type == "rotary":
            q = self.hook_rot_q(self.rotate(q))
            k = self.hook_rot_k(self.rotate(k))
        n_pos = q.shape[1]
        bias = self.position_bias(n_pos, n_pos, q.device)
        if self.pattern_needed():
            scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / self.cfg.attn_scale
            if bias is not None:
                scores = scores + bias
            causal = torch.ones(n_pos, n_pos, dtype=torch.bool, device=q.device).triu(1)
            scores = self.hook_attn_scores(scores.masked_fill(causal, float("-inf")))
            pattern = self.hook_pattern(F.softmax(scores, dim=-1))
            z = torch.einsum("bhqk,bkhd->bqhd", pattern, v)
        else:
            q_, k_, v_ = (t.transpose(1, 2) for t in (q, k, v))
            scale = 1.0 / self.cfg.attn_scale
            sdpa = folded_sdpa if self.fold_vmap else F.scaled_dot_product_attention
            if bias is None:
                z = sdpa(q_, k_, v_, is_causal=True, scale=scale)
            else:
                causal = torch.ones(n_pos, n_pos, dtype=torch.bool, device=q.device).triu(1)
                mask = bias.masked_fill(causal, float("-inf")).to(q.dtype)
                z = sdpa(q_, k_, v_, attn_mask=mask, scale=scale)
            z = z.transpose(1, 2)
        z = self.hook_z(z)
        if self.cfg.use_attn_result:
            result = self.hook_result(torch.einsum("bphd,hdm->bphm", z, self.W_O))
            out = result.sum(-2)
        else:
            out = einops.rearrange(z, "b p h d -> b p (h d)") @ einops.rearrange(
                self.W_O, "h d m -> (h d) m"
            )
        return out if self.b_O is None else out + self.b_O
