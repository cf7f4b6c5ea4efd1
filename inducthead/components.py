"""Layers of `HookedTransformer`, with TransformerLens 3's parameter and hook names.

Parameter shapes follow TL: `W_Q[h]` is `[d_model, d_head]`, `W_O[h]` is `[d_head, d_model]`,
`W_E` is `[d_vocab, d_model]`, `W_U` is `[d_model, d_vocab_out]`. Hook names and shapes follow TL:
`hook_q/k/v/z` are `[batch, pos, head, d_head]`, `hook_attn_scores/pattern` are
`[batch, head, query_pos, key_pos]`.
"""

from __future__ import annotations

import math

import einops
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from inducthead.config import HookedTransformerConfig
from inducthead.vmap_attention import folded_sdpa


def _zeros_or_none(use_bias: bool, *shape: int) -> nn.Parameter | None:
    return nn.Parameter(torch.zeros(*shape)) if use_bias else None


class Embed(nn.Module):
    def __init__(self, cfg: HookedTransformerConfig):
        super().__init__()
        self.W_E = nn.Parameter(torch.empty(cfg.d_vocab, cfg.d_model))

    def forward(self, tokens: Tensor) -> Tensor:
        # F.embedding, not W_E[tokens]: indexing's backward accumulates with several CPU threads
        # in a varying order, so training would not be bitwise reproducible.
        return F.embedding(tokens, self.W_E)


class PosEmbed(nn.Module):
    def __init__(self, cfg: HookedTransformerConfig):
        super().__init__()
        self.W_pos = nn.Parameter(torch.empty(cfg.n_ctx, cfg.d_model))

    def forward(self, tokens: Tensor) -> Tensor:
        batch, pos = tokens.shape
        return self.W_pos[:pos].unsqueeze(0).expand(batch, pos, -1)


class Unembed(nn.Module):
    def __init__(self, cfg: HookedTransformerConfig):
        super().__init__()
        self.W_U = nn.Parameter(torch.empty(cfg.d_model, cfg.d_vocab_out))
        self.b_U = _zeros_or_none(cfg.use_bias, cfg.d_vocab_out)

    def forward(self, resid: Tensor) -> Tensor:
        logits = resid @ self.W_U
        return logits if self.b_U is None else logits + self.b_U


class Norm(nn.Module):
    """LN, LNPre (no weights), RMS, RMSPre, with TL's `hook_scale` and `hook_normalized`."""

    def __init__(self, cfg: HookedTransformerConfig, length: int | None = None):
        super().__init__()
        kind = cfg.normalization_type
        self.center = kind in ("LN", "LNPre")
        self.eps = cfg.eps
        length = length or cfg.d_model
        self.w = nn.Parameter(torch.ones(length)) if kind in ("LN", "RMS") else None
        self.b = nn.Parameter(torch.zeros(length)) if kind == "LN" else None
        self.hook_scale = HookPoint()  # [batch, pos, 1]
        self.hook_normalized = HookPoint()  # [batch, pos, length]

    def forward(self, x: Tensor) -> Tensor:
        if self.center:
            x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        x = x / scale
        if self.w is not None:
            x = x * self.w
        if self.b is not None:
            x = x + self.b
        return self.hook_normalized(x)


def make_norm(cfg: HookedTransformerConfig) -> nn.Module:
    return nn.Identity() if cfg.normalization_type is None else Norm(cfg)


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
    # vmapped models into one attention call (inducthead.vmap_attention).
    fold_vmap = False

    def __init__(self, cfg: HookedTransformerConfig):
        super().__init__()
        self.cfg = cfg
        h, m, d = cfg.n_heads, cfg.d_model, cfg.d_head
        self.W_Q = nn.Parameter(torch.empty(h, m, d))
        self.W_K = nn.Parameter(torch.empty(h, m, d))
        self.W_V = nn.Parameter(torch.empty(h, m, d))
        self.W_O = nn.Parameter(torch.empty(h, d, m))
        self.b_Q = _zeros_or_none(cfg.use_bias, h, d)
        self.b_K = _zeros_or_none(cfg.use_bias, h, d)
        self.b_V = _zeros_or_none(cfg.use_bias, h, d)
        self.b_O = _zeros_or_none(cfg.use_bias, m)
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


_ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
}


class MLP(nn.Module):
    def __init__(self, cfg: HookedTransformerConfig):
        super().__init__()
        self.W_in = nn.Parameter(torch.empty(cfg.d_model, cfg.d_mlp))
        self.W_out = nn.Parameter(torch.empty(cfg.d_mlp, cfg.d_model))
        self.b_in = _zeros_or_none(cfg.use_bias, cfg.d_mlp)
        self.b_out = _zeros_or_none(cfg.use_bias, cfg.d_model)
        self.act = _ACTIVATIONS[cfg.act_fn]
        self.hook_pre = HookPoint()  # [batch, pos, d_mlp]
        self.hook_post = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        pre = x @ self.W_in
        pre = self.hook_pre(pre if self.b_in is None else pre + self.b_in)
        out = self.hook_post(self.act(pre)) @ self.W_out
        return out if self.b_out is None else out + self.b_out


class TransformerBlock(nn.Module):
    """Pre-norm residual block with TL's hooks (`hook_resid_pre`, `hook_attn_out`, ...)."""

    def __init__(self, cfg: HookedTransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.ln1 = make_norm(cfg)
        self.attn = Attention(cfg)
        self.hook_resid_pre = HookPoint()
        self.hook_attn_out = HookPoint()
        self.hook_resid_post = HookPoint()
        if cfg.use_split_qkv_input:
            self.hook_q_input = HookPoint()  # [batch, pos, head, d_model]
            self.hook_k_input = HookPoint()
            self.hook_v_input = HookPoint()
        if not cfg.attn_only:
            self.ln2 = make_norm(cfg)
            self.mlp = MLP(cfg)
            self.hook_resid_mid = HookPoint()
            self.hook_mlp_out = HookPoint()

    def forward(self, resid_pre: Tensor, shortformer_pos_embed: Tensor | None = None) -> Tensor:
        resid_pre = self.hook_resid_pre(resid_pre)
        if self.cfg.use_split_qkv_input:
            per_head = einops.repeat(resid_pre, "b p m -> b p h m", h=self.cfg.n_heads)
            q_in = self.hook_q_input(per_head.clone())
            k_in = self.hook_k_input(per_head.clone())
            v_in = self.hook_v_input(per_head.clone())
            q_in, k_in, v_in = self.ln1(q_in), self.ln1(k_in), self.ln1(v_in)
            if shortformer_pos_embed is not None:
                shortformer_pos_embed = shortformer_pos_embed.unsqueeze(2)
        else:
            q_in = k_in = v_in = self.ln1(resid_pre)
        if shortformer_pos_embed is not None:
            # Shortformer: positions enter queries and keys only, never values or the residual.
            q_in = q_in + shortformer_pos_embed
            k_in = k_in + shortformer_pos_embed
        attn_out = self.hook_attn_out(self.attn(q_in, k_in, v_in))
        if self.cfg.attn_only:
            return self.hook_resid_post(resid_pre + attn_out)
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)
        mlp_out = self.hook_mlp_out(self.mlp(self.ln2(resid_mid)))
        return self.hook_resid_post(resid_mid + mlp_out)
