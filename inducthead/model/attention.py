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


def matmul_bias(x: Tensor, W: Tensor, b: Tensor | None) -> Tensor:
    """`x @ W + b` (`W` `[d_in, d_out]`) as one GEMM: the bias is added inside it (addmm), not
    in a second pass over the output."""
    return x @ W if b is None else F.linear(x, W.T, b)


def offset_positions(attention_mask: Tensor) -> Tensor:
    """Position ids counted from each row's first real token (padding before it: 0), TL 3's
    convention for left-padded input."""
    return (attention_mask.long().cumsum(1) - 1).clamp(min=0)


def rotary_sin_cos(cfg: HookedTransformerConfig) -> tuple[Tensor, Tensor]:
    """TL's rotary sin/cos tables `[n_ctx, rotary_dim]`: pairs (i, i + d/2), or (2i, 2i + 1)
    if adjacent."""
    dim = cfg.rotary_dim
    freq = cfg.rotary_base ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    pattern = "d -> (d 2)" if cfg.rotary_adjacent_pairs else "d -> (2 d)"
    freq = einops.repeat(freq, pattern)
    angles = torch.arange(cfg.n_ctx, dtype=torch.float64)[:, None] / freq[None, :]
    return angles.sin().float(), angles.cos().float()


def smear(k: Tensor, logit: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """Smeared keys (Olsson et al. 2022, Argument 2): `k [batch, pos, head, d]` ->
    sigma(logit_h) k_j + (1 - sigma(logit_h)) k_{j-1}; the first key (and, with left padding,
    the first real token's) has no predecessor and is kept as is."""
    gate = torch.sigmoid(logit)[None, None, :, None].to(k.dtype)
    prev = torch.cat([k[:, :1], k[:, :-1]], 1)  # position 0 reads itself: unchanged
    if attention_mask is not None:  # a predecessor that is padding: keep the own key
        pad_before = F.pad(attention_mask[:, :-1] == 0, (1, 0), value=True)
        prev = torch.where(pad_before[:, :, None, None], k, prev)
    return k + (1 - gate) * (prev - k)  # = gate k + (1 - gate) prev; exactly k where prev is


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
    """Multi-head self-attention (causal, or bidirectional with `attention_dir`), one einsum per
    projection (no per-head loops); grouped-query attention in `GroupedQueryAttention`.

    Two paths compute the same function. Inside `HookedTransformer.fast_attention()` (what
    `inducthead.train` runs under), when nothing hooks `hook_attn_scores` or `hook_pattern`, the
    pattern is never materialised and `F.scaled_dot_product_attention` runs (flash /
    memory-efficient kernels on CUDA). Everywhere else scores and pattern are computed
    explicitly, so outputs never depend on which hooks are attached (`model(x)` equals
    `model.run_with_cache(x)[0]` exactly). The two paths agree to float rounding (tested to
    1e-5).
    """

    # The fast path is allowed (HookedTransformer.fast_attention sets it).
    sdpa = False
    # train_many runs the model under torch.func.vmap: it sets this so the fast path folds the
    # vmapped models into one attention call (`inducthead.model.kernels`).
    fold_vmap = False

    def __init__(self, cfg: HookedTransformerConfig):
        super().__init__()
        self.cfg = cfg
        h, m, d = cfg.n_heads, cfg.d_model, cfg.d_head
        self.n_kv_heads = cfg.n_key_value_heads or h
        self.W_Q = nn.Parameter(torch.empty(h, m, d))
        self.W_O = nn.Parameter(torch.empty(h, d, m))
        self.b_Q = optional_bias(cfg.use_bias, h, d)
        self.b_O = optional_bias(cfg.use_bias, m)
        self._init_key_value(cfg)
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
        self.hook_result = HookPoint()  # runs when cfg.use_attn_result: [batch, pos, head, d_model]
        if cfg.smear_keys:  # Olsson et al. 2022's smeared keys: sigma(0) = 1/2 at init
            self.smear_logit = nn.Parameter(torch.zeros(h))
            self.hook_k_smeared = HookPoint()  # [batch, pos, head, d_head]

    def _init_key_value(self, cfg: HookedTransformerConfig) -> None:
        h, m, d = cfg.n_heads, cfg.d_model, cfg.d_head
        self.W_K = nn.Parameter(torch.empty(h, m, d))
        self.W_V = nn.Parameter(torch.empty(h, m, d))
        self.b_K = optional_bias(cfg.use_bias, h, d)
        self.b_V = optional_bias(cfg.use_bias, h, d)

    def key_value_weights(self) -> tuple[Tensor, Tensor | None, Tensor, Tensor | None]:
        """W_K, b_K, W_V, b_V with one entry per key/value head (as stored)."""
        return self.W_K, self.b_K, self.W_V, self.b_V

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

    def rotate(self, x: Tensor, positions: Tensor | None = None) -> Tensor:
        """Rotary embedding on the first `rotary_dim` features of `[batch, pos, head, d_head]`,
        at positions 0.. (or `positions` `[batch, pos]`, e.g. counted past left padding)."""
        pos, dim = x.shape[1], self.cfg.rotary_dim
        x_rot, x_pass = x[..., :dim], x[..., dim:]
        if self.cfg.rotary_adjacent_pairs:
            flipped = torch.stack((-x_rot[..., 1::2], x_rot[..., 0::2]), dim=-1).flatten(-2)
        else:
            half = dim // 2
            flipped = torch.cat((-x_rot[..., half:], x_rot[..., :half]), dim=-1)
        if positions is None:
            sin, cos = self.rotary_sin[:pos, None, :], self.rotary_cos[:pos, None, :]
        else:
            tables = (self.rotary_sin, self.rotary_cos)
            sin, cos = (table[positions][:, :, None] for table in tables)
        sin, cos = sin.to(x.dtype), cos.to(x.dtype)
        return torch.cat((x_rot * cos + flipped * sin, x_pass), dim=-1)

    # --- forward ---------------------------------------------------------------------------
    def _project(self, x: Tensor, W: Tensor, b: Tensor | None) -> Tensor:
        if x.ndim == 4:  # split qkv input: [batch, pos, head, d_model]
            out = torch.einsum("bphm,hmd->bphd", x, W)
            return out if b is None else out + b
        # one [d_model, heads * d_head] matmul (an einsum here ran one bmm per head)
        h, m, d = W.shape
        flat_b = None if b is None else b.flatten()
        return matmul_bias(x, W.transpose(0, 1).reshape(m, h * d), flat_b).unflatten(-1, (h, d))

    def pattern_needed(self) -> bool:
        """True when a hook reads or edits scores/pattern, so the explicit path must run."""
        return any(
            hp._forward_hooks or hp._backward_hooks or hp._forward_pre_hooks
            for hp in (self.hook_attn_scores, self.hook_pattern)
        )

    def forward(
        self,
        query_input: Tensor,
        key_input: Tensor,
        value_input: Tensor,
        attention_mask: Tensor | None = None,
    ) -> Tensor:
        """`attention_mask` `[batch, pos]`: 1 for tokens, 0 for padding (never attended to; a
        query with nothing to attend to gets a zero pattern row, as in TL 3)."""
        W_K, b_K, W_V, b_V = self.key_value_weights()
        if key_input.ndim == 4 and key_input.shape[2] != W_K.shape[0]:  # ungrouped split input
            W_K, b_K, W_V, b_V = self.W_K, self.b_K, self.W_V, self.b_V
        q = self.hook_q(self._project(query_input, self.W_Q, self.b_Q))
        k = self._project(key_input, W_K, b_K)
        v = self._project(value_input, W_V, b_V)
        if self.n_kv_heads != self.cfg.n_heads and self.cfg.ungroup_grouped_query_attention:
            k, v = self._grouped(k), self._grouped(v)
        k, v = self.hook_k(k), self.hook_v(v)
        if self.cfg.positional_embedding_type == "rotary":
            # before grouping: hook_rot_k has the key heads hook_k has, as in TL 3
            positions = None if attention_mask is None else offset_positions(attention_mask)
            q = self.hook_rot_q(self.rotate(q, positions))
            k = self.hook_rot_k(self.rotate(k, positions))
        k, v = self._grouped(k), self._grouped(v)  # one key/value per query head
        if self.cfg.smear_keys:
            k = self.hook_k_smeared(smear(k, self.smear_logit, attention_mask))
        n_pos = q.shape[1]
        bias = self.position_bias(n_pos, n_pos, q.device)
        allowed = self._allowed(n_pos, q.device, attention_mask)  # None: plain causal
        if self.sdpa and not self.pattern_needed():
            z = self._sdpa(q, k, v, bias, allowed)
        else:
            scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / self.cfg.attn_scale
            if bias is not None:
                scores = scores + bias
            if allowed is None:
                allowed = torch.ones(n_pos, n_pos, dtype=torch.bool, device=q.device).tril()
            scores = self.hook_attn_scores(scores.masked_fill(~allowed, float("-inf")))
            pattern = F.softmax(scores, dim=-1)
            if attention_mask is not None:  # rows with nothing to attend to: zeros, not NaN
                pattern = torch.where(torch.isnan(pattern), 0.0, pattern)
            pattern = self.hook_pattern(pattern)
            z = torch.einsum("bhqk,bkhd->bqhd", pattern, v)
        z = self.hook_z(z)
        if self.cfg.use_attn_result:
            result = self.hook_result(torch.einsum("bphd,hdm->bphm", z, self.W_O))
            out = result.sum(-2)
            return out if self.b_O is None else out + self.b_O
        W_O = einops.rearrange(self.W_O, "h d m -> (h d) m")
        return matmul_bias(einops.rearrange(z, "b p h d -> b p (h d)"), W_O, self.b_O)

    def _grouped(self, x: Tensor) -> Tensor:
        """Key/value heads `[b, p, n_kv, d]` repeated for the query heads they serve."""
        if x.shape[2] == self.cfg.n_heads:
            return x
        return x.repeat_interleave(self.cfg.n_heads // x.shape[2], dim=2)

    def _allowed(self, n: int, device, attention_mask: Tensor | None) -> Tensor | None:
        """Which keys each query may attend to, `[batch, 1, q, k]` or `[q, k]`; None for the
        plain causal case (SDPA's `is_causal`)."""
        causal = self.cfg.attention_dir == "causal"
        if attention_mask is None:
            return None if causal else torch.ones(n, n, dtype=torch.bool, device=device)
        keys = attention_mask.bool()[:, None, None, :]
        if causal:
            keys = keys & torch.ones(n, n, dtype=torch.bool, device=device).tril()
        return keys

    def _sdpa(self, q, k, v, bias, allowed) -> Tensor:
        q_, k_, v_ = (t.transpose(1, 2) for t in (q, k, v))
        scale = 1.0 / self.cfg.attn_scale
        sdpa = folded_sdpa if self.fold_vmap else F.scaled_dot_product_attention
        if bias is None and allowed is None:
            z = sdpa(q_, k_, v_, is_causal=True, scale=scale)
        else:
            if allowed is None:
                n = q.shape[1]
                allowed = torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
            mask = torch.zeros((), device=q.device) if bias is None else bias
            mask = mask.masked_fill(~allowed, float("-inf")).to(q.dtype)
            z = sdpa(q_, k_, v_, attn_mask=mask, scale=scale)
            z = torch.where(torch.isnan(z), 0.0, z)  # rows with nothing to attend to
        return z.transpose(1, 2)


class GroupedQueryAttention(Attention):
    """Grouped-query attention (`n_key_value_heads`): each of the key/value heads serves
    n_heads / n_key_value_heads query heads. Parameters are TL 3's (`_W_K`, `_W_V`, `_b_K`,
    `_b_V`, one per key/value head); `W_K`, `W_V`, `b_K`, `b_V` are the per-query-head views."""

    def _init_key_value(self, cfg: HookedTransformerConfig) -> None:
        kv, m, d = cfg.n_key_value_heads, cfg.d_model, cfg.d_head
        self._W_K = nn.Parameter(torch.empty(kv, m, d))
        self._W_V = nn.Parameter(torch.empty(kv, m, d))
        self._b_K = optional_bias(cfg.use_bias, kv, d)
        self._b_V = optional_bias(cfg.use_bias, kv, d)

    def key_value_weights(self):
        return self._W_K, self._b_K, self._W_V, self._b_V

    def _per_query_head(self, x: Tensor | None) -> Tensor | None:
        return None if x is None else x.repeat_interleave(self.cfg.n_heads // x.shape[0], dim=0)

    @property
    def W_K(self) -> Tensor:
        return self._per_query_head(self._W_K)

    @property
    def W_V(self) -> Tensor:
        return self._per_query_head(self._W_V)

    @property
    def b_K(self) -> Tensor | None:
        return self._per_query_head(self._b_K)

    @property
    def b_V(self) -> Tensor | None:
        return self._per_query_head(self._b_V)
