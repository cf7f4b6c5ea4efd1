"""Layers of `HookedTransformer` other than attention (`inducthead.model.attention`), with
TransformerLens 3's parameter and hook names.

Parameter shapes follow TL: `W_E` is `[d_vocab, d_model]`, `W_U` is `[d_model, d_vocab_out]`,
`W_in` is `[d_model, d_mlp]`; the residual-stream hooks are `[batch, pos, d_model]`.
"""

from __future__ import annotations

import einops
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from inducthead.model.attention import (
    Attention,
    GroupedQueryAttention,
    matmul_bias,
    offset_positions,
    optional_bias,
)
from inducthead.model.config import HookedTransformerConfig


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

    def forward(self, tokens: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """`[batch, pos, d_model]`. With a padding `attention_mask` (1 = token, 0 = padding), the
        first real token of each row gets position 0 and padding gets zeros (TL 3's convention,
        so left-padded prompts embed like unpadded ones)."""
        batch, pos = tokens.shape
        if attention_mask is None:
            return self.W_pos[:pos].unsqueeze(0).expand(batch, pos, -1)
        embedded = self.W_pos[offset_positions(attention_mask)]
        return embedded.masked_fill(~attention_mask.bool()[..., None], 0.0)


class Unembed(nn.Module):
    def __init__(self, cfg: HookedTransformerConfig):
        super().__init__()
        self.W_U = nn.Parameter(torch.empty(cfg.d_model, cfg.d_vocab_out))
        self.b_U = optional_bias(cfg.use_bias, cfg.d_vocab_out)
        self.hook_in = HookPoint()  # [batch, pos, d_model]
        self.hook_out = HookPoint()  # [batch, pos, d_vocab_out]

    def forward(self, resid: Tensor) -> Tensor:
        logits = self.hook_in(resid) @ self.W_U
        return self.hook_out(logits if self.b_U is None else logits + self.b_U)


class Norm(nn.Module):
    """LN, LNPre (no weights), RMS, RMSPre, with TL's `hook_scale` and `hook_normalized`: as in
    TransformerLens 3, `hook_normalized` is x / scale, before the weight and bias."""

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
        x = self.hook_normalized(x / scale)
        if self.w is not None:
            x = x * self.w
        if self.b is not None:
            x = x + self.b
        return x


def make_norm(cfg: HookedTransformerConfig) -> nn.Module:
    return nn.Identity() if cfg.normalization_type is None else Norm(cfg)


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
        self.b_in = optional_bias(cfg.use_bias, cfg.d_mlp)
        self.b_out = optional_bias(cfg.use_bias, cfg.d_model)
        self.act = _ACTIVATIONS[cfg.act_fn]
        self.hook_pre = HookPoint()  # [batch, pos, d_mlp]
        self.hook_post = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        pre = self.hook_pre(matmul_bias(x, self.W_in, self.b_in))
        return matmul_bias(self.hook_post(self.act(pre)), self.W_out, self.b_out)


class TransformerBlock(nn.Module):
    """Pre-norm residual block with TL's hooks (`hook_resid_pre`, `hook_attn_out`, ...). The
    optional hook points exist always and run when their config flag is on (`use_attn_in`,
    `use_split_qkv_input`, `use_hook_mlp_in`), so `model.set_use_*` switches them at once."""

    def __init__(self, cfg: HookedTransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.ln1 = make_norm(cfg)
        self.attn = (GroupedQueryAttention if cfg.n_key_value_heads else Attention)(cfg)
        self.hook_resid_pre = HookPoint()
        self.hook_attn_in = HookPoint()  # [batch, pos, head, d_model]
        self.hook_q_input = HookPoint()  # [batch, pos, head, d_model]
        self.hook_k_input = HookPoint()  # [batch, pos, key/value head, d_model]
        self.hook_v_input = HookPoint()
        self.hook_attn_out = HookPoint()
        self.hook_resid_post = HookPoint()
        if not cfg.attn_only:
            self.ln2 = make_norm(cfg)
            self.mlp = MLP(cfg)
            self.hook_resid_mid = HookPoint()
            self.hook_mlp_in = HookPoint()
            self.hook_mlp_out = HookPoint()

    def forward(
        self,
        resid_pre: Tensor,
        shortformer_pos_embed: Tensor | None = None,
        attention_mask: Tensor | None = None,
    ) -> Tensor:
        cfg = self.cfg
        resid_pre = self.hook_resid_pre(resid_pre)
        per_head = cfg.use_attn_in or cfg.use_split_qkv_input
        if per_head and shortformer_pos_embed is not None:
            shortformer_pos_embed = shortformer_pos_embed.unsqueeze(2)
        if cfg.use_split_qkv_input:
            if cfg.use_attn_in:  # TL 3 runs hook_attn_in too (its value then feeds nothing)
                self.hook_attn_in(_per_head(resid_pre, cfg.n_heads))
            kv_heads = self.attn.n_kv_heads if not cfg.ungroup_grouped_query_attention else None
            q_in = self.hook_q_input(_per_head(resid_pre, cfg.n_heads))
            k_in = self.hook_k_input(_per_head(resid_pre, kv_heads or cfg.n_heads))
            v_in = self.hook_v_input(_per_head(resid_pre, kv_heads or cfg.n_heads))
        elif cfg.use_attn_in:
            q_in = k_in = v_in = self.hook_attn_in(_per_head(resid_pre, cfg.n_heads))
        else:
            q_in = k_in = v_in = resid_pre
        if q_in is k_in is v_in:  # one input: normalise it once (TL 3 does it three times)
            q_in = k_in = v_in = self.ln1(q_in)
        else:
            q_in, k_in, v_in = (self.ln1(x) for x in (q_in, k_in, v_in))
        if shortformer_pos_embed is not None:
            # Shortformer: positions enter queries and keys only, never values or the residual.
            q_in = q_in + shortformer_pos_embed
            k_in = k_in + shortformer_pos_embed
        attn_out = self.hook_attn_out(self.attn(q_in, k_in, v_in, attention_mask))
        if cfg.attn_only:
            return self.hook_resid_post(resid_pre + attn_out)
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)
        mlp_in = self.hook_mlp_in(resid_mid.clone()) if cfg.use_hook_mlp_in else resid_mid
        mlp_out = self.hook_mlp_out(self.mlp(self.ln2(mlp_in)))
        return self.hook_resid_post(resid_mid + mlp_out)


def _per_head(resid: Tensor, n_heads: int) -> Tensor:
    """`[batch, pos, d_model]` -> `[batch, pos, n_heads, d_model]` (a copy per head, so hooks on
    one head's input can edit it alone)."""
    return einops.repeat(resid, "b p m -> b p h m", h=n_heads).clone()
