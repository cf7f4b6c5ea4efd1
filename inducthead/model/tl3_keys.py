"""TransformerLens 3 config keys that `HookedTransformerConfig.from_dict` meets in a TL 3
`cfg.to_dict()` beyond our own fields: those it may drop, and those it must refuse when set."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

# Keys that describe loading, devices, tokenizers, derived values or hook points: they cannot
# change what the model computes, so they are dropped.
TL3_IGNORED = frozenset(
    [
        "device",
        "n_devices",
        "tokenizer_name",
        "tokenizer_prepends_bos",
        "original_architecture",
        "from_checkpoint",
        "checkpoint_index",
        "checkpoint_label_type",
        "checkpoint_value",
        "init_mode",
        "dtype",
        "n_params",
        "layer_norm_folding",
        "trust_remote_code",
        "load_in_4bit",
        "tokenizer_appends_eos",
        "default_padding_side",
        "tie_word_embeddings",
        "uses_rms_norm",
        "quantization_method",
        # read only by TL 3's encoder-decoder (T5) components, never by its HookedTransformer
        "decoder_start_token_id",
        "relative_attention_max_distance",
        "relative_attention_num_buckets",
    ]
)

# Settings that change the computation, which our model does not implement, with the TL 3
# default (the value under which the function is ours): accepted at that value, refused by name
# otherwise. The NTK-by-parts factors only matter with use_NTK_by_parts_rope.
TL3_UNSUPPORTED: dict[str, Any] = {
    "parallel_attn_mlp": False,
    "scale_attn_by_inverse_layer_idx": False,
    "attn_scores_soft_cap": -1.0,
    "output_logits_soft_cap": -1.0,
    "gated_mlp": False,
    "final_rms": False,
    "use_qk_norm": False,
    "use_local_attn": False,
    "window_size": None,
    "attn_types": None,
    "post_embedding_ln": False,
    "use_NTK_by_parts_rope": False,
    "NTK_by_parts_factor": None,
    "NTK_by_parts_low_freq_factor": None,
    "NTK_by_parts_high_freq_factor": None,
    "NTK_original_ctx_len": None,
    "use_normalization_before_and_after": False,
    "num_experts": None,
    "experts_per_token": None,
    "norm_topk_prob": False,
    "clip_qkv": None,
    "use_logn_attn": False,
    "train_seq_length": None,
    "use_dynamic_ntk_rope": False,
    "rotary_base_local": None,
    "rotary_scaling_factor": 1.0,
    "use_attention_sinks": False,
    "use_yarn_rope": False,
    "yarn_factor": 1.0,
    "yarn_attention_factor": 1.0,
    "yarn_beta_fast": 32.0,
    "yarn_beta_slow": 1.0,
    "yarn_original_max_position_embeddings": 4096,
    "yarn_truncate": True,
    "yarn_global_attn_only": False,
}
# Parameters of a feature: they matter only when the feature's switch is on.
_ONLY_WITH = {
    **{name: "use_NTK_by_parts_rope" for name in TL3_UNSUPPORTED if name.startswith("NTK_")},
    **{name: "use_yarn_rope" for name in TL3_UNSUPPORTED if name.startswith("yarn_")},
    "norm_topk_prob": "num_experts",
    # TL 3 reads these only in blocks whose attn_type is "local", i.e. with use_local_attn
    "window_size": "use_local_attn",
    "attn_types": "use_local_attn",
    "rotary_base_local": "use_local_attn",
    "train_seq_length": "use_logn_attn",
}

# Ignored keys some of whose values change what TL 3's HookedTransformer computes: TL 3.9 gives
# these architectures post-norm blocks and QK norms (`TransformerBlock`, `AbstractAttention`).
# Refused by name at those values; any other value is dropped.
TL3_REFUSED_VALUES: dict[str, frozenset] = {
    "original_architecture": frozenset(
        ["Olmo2ForCausalLM", "Olmo3ForCausalLM", "OlmoeForCausalLM"]
    ),
}

TL3_KEYS = TL3_IGNORED | TL3_UNSUPPORTED.keys()


def tl3_normalised(d: dict[str, Any]) -> dict[str, Any]:
    """`d` with what TL 3 writes that cannot change the function made ours: in a TL 3 dict (one
    with TL-only keys), an attention-only config's `d_mlp` / `act_fn` (TL 3 fills them in even
    without an MLP) are dropped; our own dicts stay strict. ValueError naming every TL 3 setting
    that would make the model compute something else."""
    check_tl3_keys(d)
    from_tl3 = any(k in TL3_KEYS for k in d)  # a TL 3 cfg.to_dict(), not one of ours
    if from_tl3 and d.get("attn_only"):
        d = {k: v for k, v in d.items() if k not in ("d_mlp", "act_fn")}
    return d


def check_tl3_keys(d: dict[str, Any]) -> None:
    """ValueError naming every TL 3 setting in `d` that would make the model compute something
    other than what `HookedTransformer` computes."""
    bad = []
    for name, default in TL3_UNSUPPORTED.items():
        if name not in d or d[name] == default:
            continue
        switch = _ONLY_WITH.get(name)
        if switch is not None and not d.get(switch):
            continue  # a parameter of a feature that is off
        bad.append(f"{name}={d[name]!r} (supported: {default!r})")
    for name, values in TL3_REFUSED_VALUES.items():
        if isinstance(d.get(name), str) and d[name] in values:
            bad.append(f"{name}={d[name]!r} (post-norm blocks and QK norms in TL 3)")
    if bad:
        raise ValueError(
            "HookedTransformerConfig.from_dict: TransformerLens setting(s) "
            f"{'; '.join(bad)} change what the model computes and inducthead's HookedTransformer "
            "does not implement them; refusing rather than building a different model."
        )


def init_taking_tl3_keywords(fields_init: Callable, fields: set[str]) -> Callable:
    """The config's dataclass `__init__`, made to take TransformerLens 3's keywords as
    `from_dict` takes its dicts, so a TL 3 / ARENA cell `HookedTransformerConfig(...,
    tokenizer_name=..., device=...)` runs unchanged: settings that change the function and that
    we do not implement are refused by name, the rest dropped, except three TL 3's
    HookedTransformer acts on, kept as runtime attributes (not part of the architecture):
    `tokenizer_name` (the model loads that tokenizer), `device` and `dtype` (the model is built
    there). Jupyter and IDEs still show the fields' signature (`functools.wraps`)."""

    @functools.wraps(fields_init)
    def __init__(self, *args, **kwargs) -> None:
        tl3 = {k: kwargs.pop(k) for k in list(kwargs) if k not in fields and k in TL3_KEYS}
        if tl3:
            kept = tl3_normalised({**kwargs, **tl3})  # raises on what changes the function
            kwargs = {k: v for k, v in kept.items() if k in fields}
        fields_init(self, *args, **kwargs)  # unknown keywords: Python's own TypeError, by name
        self.tokenizer_name = tl3.get("tokenizer_name")
        if tl3.get("device") is not None:
            self.device = str(tl3["device"])
        if isinstance(tl3.get("dtype"), torch.dtype):
            self.dtype = tl3["dtype"]

    __init__.__doc__ = init_taking_tl3_keywords.__doc__
    return __init__
