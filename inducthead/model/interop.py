"""Interop with TransformerLens 4: our weights in a `TransformerBridge`, so TL tools apply."""

from __future__ import annotations

import math

import einops
import torch
from torch import Tensor

from inducthead.model.config import HookedTransformerConfig
from inducthead.model.hooked import HookedTransformer

# Positional types TransformerBridge's native model can express ("none" = zero learned positions).
BRIDGE_POSITIONAL_TYPES = ("standard", "rotary", "none")
# Config fields a TransformerBridgeConfig takes unchanged from ours.
_SHARED_FIELDS = (
    "d_model",
    "d_head",
    "n_heads",
    "n_layers",
    "n_ctx",
    "d_vocab",
    "d_vocab_out",
    "attn_only",
    "d_mlp",
    "act_fn",
    "normalization_type",
    "eps",
    "rotary_dim",
    "rotary_base",
)


def _rotary_to_adjacent(dim: int, d_head: int) -> Tensor:
    """Feature order taking TL's (i, i + dim/2) rotary pairs to the bridge's (2i, 2i + 1) pairs."""
    half = torch.arange(dim // 2)
    return torch.cat(
        [torch.stack([half, half + dim // 2], -1).flatten(), torch.arange(dim, d_head)]
    )


def to_bridge(model: HookedTransformer, tokenizer=None):
    """A TransformerLens 4 `TransformerBridge` (`boot_native`) computing the same function.

    Logits and every `blocks.{l}.attn.hook_pattern` match ours (tested to 1e-5), so TL's patching,
    head detection and ActivationCache tools apply. Shortformer, relative and ALiBi positions have
    no TransformerBridge equivalent and raise ValueError. For rotary models with TL's default
    (i, i + d/2) pairing, W_Q/W_K features are reordered to the bridge's adjacent pairing: patterns
    and logits agree, `hook_q`/`hook_k` features are permuted. `tokenizer` (optional) is attached
    to the bridge, for TL tools that take text.
    """
    from transformer_lens import TransformerBridge, TransformerBridgeConfig

    if not isinstance(model, HookedTransformer):
        raise TypeError(
            f"to_bridge expects an inducthead.HookedTransformer, got {type(model).__name__}."
        )
    cfg = model.cfg
    kind = cfg.positional_embedding_type
    if kind not in BRIDGE_POSITIONAL_TYPES:
        raise ValueError(
            f"to_bridge: positional_embedding_type={kind!r} has no TransformerBridge equivalent "
            f"(supported: {', '.join(BRIDGE_POSITIONAL_TYPES)}). Use the model directly: it has "
            "TransformerLens hook names, so run_with_cache/run_with_hooks work on it."
        )
    if cfg.smear_keys:
        raise ValueError(
            "to_bridge: smeared keys (cfg.smear_keys) have no TransformerBridge equivalent. Use "
            "the model directly: it has TransformerLens hook names (plus attn.hook_k_smeared)."
        )
    bridge_cfg = TransformerBridgeConfig(
        **{name: getattr(cfg, name) for name in _SHARED_FIELDS},
        positional_embedding_type="rotary" if kind == "rotary" else "standard",
        seed=0,
    )
    bridge = TransformerBridge.boot_native(bridge_cfg, tokenizer=tokenizer, device=model.device)
    bridge.cfg.model_name = cfg.model_name
    # The bridge config has no BOS field: keep ours, so analyses probe the bridge as they probe
    # the model (`inducthead.analysis.ModelAdapter` reads it when no tokenizer says otherwise).
    bridge.cfg.bos_token_id = cfg.bos_token_id
    bridge.loaded_from = getattr(model, "loaded_from", None)
    state = _bridge_state_dict(model)
    missing, unexpected = bridge.load_state_dict(state, strict=False)
    if unexpected or missing:  # a TL change we don't know about: fail loudly, never half-load.
        raise RuntimeError(
            f"to_bridge: state-dict mismatch, missing={missing}, unexpected={unexpected}"
        )
    return bridge.train(model.training)  # same mode as ours (TL patching wants eval())


def _bridge_state_dict(model: HookedTransformer) -> dict[str, Tensor]:
    cfg = model.cfg
    # The bridge always divides scores by sqrt(d_head); fold our scale into W_Q so scores match.
    q_factor = math.sqrt(cfg.d_head) / cfg.attn_scale
    perm = None
    if cfg.positional_embedding_type == "rotary" and not cfg.rotary_adjacent_pairs:
        perm = _rotary_to_adjacent(cfg.rotary_dim, cfg.d_head).to(model.device)

    def linear(W: Tensor, permute: bool = False) -> Tensor:  # [h, m, d] -> nn.Linear [(h d), m]
        if permute and perm is not None:
            W = W[..., perm]
        return einops.rearrange(W, "h m d -> (h d) m")

    def bias(b: Tensor, permute: bool = False) -> Tensor:  # [h, d] -> [(h d)]
        if permute and perm is not None:
            b = b[..., perm]
        return b.flatten()

    with torch.no_grad():
        s = {"embed.weight": model.W_E, "unembed.weight": model.W_U.T, "unembed.bias": model.b_U}
        s["pos_embed.weight"] = model.W_pos  # zeros for "none"; unused for rotary
        if cfg.positional_embedding_type == "rotary":
            del s["pos_embed.weight"]
        W_Q, W_K, W_V, W_O = model.W_Q, model.W_K, model.W_V, model.W_O
        b_Q, b_K, b_V, b_O = model.b_Q, model.b_K, model.b_V, model.b_O
        for l in range(cfg.n_layers):
            p = f"blocks.{l}."
            s[p + "attn.q.weight"] = linear(W_Q[l] * q_factor, permute=True)
            s[p + "attn.q.bias"] = bias(b_Q[l] * q_factor, permute=True)
            s[p + "attn.k.weight"] = linear(W_K[l], permute=True)
            s[p + "attn.k.bias"] = bias(b_K[l], permute=True)
            s[p + "attn.v.weight"] = linear(W_V[l])
            s[p + "attn.v.bias"] = bias(b_V[l])
            s[p + "attn.o.weight"] = einops.rearrange(W_O[l], "h d m -> m (h d)")
            s[p + "attn.o.bias"] = b_O[l]
            block = model.blocks[l]
            norms = [("ln1", block.ln1)] + ([] if cfg.attn_only else [("ln2", block.ln2)])
            for name, norm in norms:
                s.update(_norm_state(p + name, norm))
            if not cfg.attn_only:
                s[p + "mlp.in.weight"] = model.W_in[l].T
                s[p + "mlp.in.bias"] = model.b_in[l]
                s[p + "mlp.out.weight"] = model.W_out[l].T
                s[p + "mlp.out.bias"] = model.b_out[l]
        s.update(_norm_state("ln_final", model.ln_final))
        return {k: v.detach().clone().contiguous() for k, v in s.items()}


def _norm_state(prefix: str, norm) -> dict[str, Tensor]:
    out = {}
    if getattr(norm, "w", None) is not None:
        out[prefix + ".weight"] = norm.w
    if getattr(norm, "b", None) is not None:
        out[prefix + ".bias"] = norm.b
    return out


def from_hf_gpt2(model_or_path, device: str | None = None) -> HookedTransformer:
    """Our `HookedTransformer` holding a Hugging Face GPT-2's weights (a `GPT2LMHeadModel` or a
    local directory): same logits, our fast attention path and TL hook names. Useful to run
    inducthead's tools on GPT-2-family checkpoints without the bridge's per-hook overhead."""
    hf = model_or_path
    if not hasattr(hf, "state_dict"):
        from transformers import GPT2LMHeadModel

        hf = GPT2LMHeadModel.from_pretrained(str(model_or_path))
    c = hf.config
    if c.model_type != "gpt2":
        raise ValueError(f"from_hf_gpt2 converts GPT-2 models, got model_type={c.model_type!r}.")
    if c.activation_function not in ("gelu_new", "gelu", "relu"):
        raise ValueError(f"unsupported GPT-2 activation {c.activation_function!r}.")
    if getattr(c, "scale_attn_by_inverse_layer_idx", False) or getattr(
        c, "reorder_and_upcast_attn", False
    ):
        raise ValueError("GPT-2 variants with per-layer attention scaling are not supported.")
    d, h = c.n_embd, c.n_head
    cfg = HookedTransformerConfig(
        n_layers=c.n_layer,
        d_model=d,
        n_heads=h,
        d_head=d // h,
        d_vocab=c.vocab_size,
        n_ctx=c.n_positions,
        d_mlp=c.n_inner or 4 * d,
        act_fn=c.activation_function,
        normalization_type="LN",
        eps=c.layer_norm_epsilon,
        use_attn_scale=c.scale_attn_weights,
        bos_token_id=c.bos_token_id
        if c.bos_token_id is not None and c.bos_token_id < c.vocab_size
        else None,
        init_weights=False,
        model_name=getattr(c, "_name_or_path", "gpt2") or "gpt2",
    )
    sd = {k.removeprefix("transformer."): v for k, v in hf.state_dict().items()}
    ours: dict[str, Tensor] = {
        "embed.W_E": sd["wte.weight"],
        "pos_embed.W_pos": sd["wpe.weight"],
        "ln_final.w": sd["ln_f.weight"],
        "ln_final.b": sd["ln_f.bias"],
        "unembed.W_U": sd.get("lm_head.weight", sd["wte.weight"]).T,
        "unembed.b_U": torch.zeros(c.vocab_size),
    }
    for l in range(c.n_layer):
        p, q = f"h.{l}.", f"blocks.{l}."
        W_qkv, b_qkv = sd[p + "attn.c_attn.weight"], sd[p + "attn.c_attn.bias"]
        for i, name in enumerate("QKV"):
            ours[q + f"attn.W_{name}"] = einops.rearrange(
                W_qkv[:, i * d : (i + 1) * d], "m (h e) -> h m e", h=h
            )
            ours[q + f"attn.b_{name}"] = b_qkv[i * d : (i + 1) * d].reshape(h, d // h)
        ours[q + "attn.W_O"] = einops.rearrange(
            sd[p + "attn.c_proj.weight"], "(h e) m -> h e m", h=h
        )
        ours[q + "attn.b_O"] = sd[p + "attn.c_proj.bias"]
        for ln, src in (("ln1", "ln_1"), ("ln2", "ln_2")):
            ours[q + f"{ln}.w"] = sd[p + f"{src}.weight"]
            ours[q + f"{ln}.b"] = sd[p + f"{src}.bias"]
        ours[q + "mlp.W_in"] = sd[p + "mlp.c_fc.weight"]
        ours[q + "mlp.b_in"] = sd[p + "mlp.c_fc.bias"]
        ours[q + "mlp.W_out"] = sd[p + "mlp.c_proj.weight"]
        ours[q + "mlp.b_out"] = sd[p + "mlp.c_proj.bias"]
    model = HookedTransformer(cfg)
    model.load_state_dict({k: v.detach().clone().contiguous() for k, v in ours.items()})
    model.eval()
    return model.to(device) if device else model
