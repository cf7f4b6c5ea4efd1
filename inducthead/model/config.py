"""Model configuration: TransformerLens's `HookedTransformerConfig` field names plus paper extras.

Field names and defaults follow TransformerLens 3's `HookedTransformerConfig` so a TL user can
read and write them without a lookup table; TL 3 config dicts load through `from_dict`. Extras
needed by the induction-head papers (BOS id, relative-position window, bias-free layers, embedding
init scale) are marked below. Every field is checked on construction and errors name the field
and the allowed values.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from inducthead.model.tl3_keys import TL3_KEYS, init_taking_tl3_keywords, tl3_normalised

# Fields derived from others unless given -> the value that means "not given".
_DERIVED: dict[str, Any] = {
    "n_heads": -1,  # d_model // d_head
    "d_vocab_out": -1,  # d_vocab
    "d_mlp": None,  # 4 * d_model, or none when attn_only
    "act_fn": None,  # gelu, or none when attn_only
    "attn_scale": -1.0,  # sqrt(d_head) when use_attn_scale
    "initializer_range": -1.0,  # 0.8 / sqrt(d_model)
    "rotary_dim": None,  # d_head for rotary positions
    "relative_window": None,  # n_ctx for relative positions
}

POSITIONAL_EMBEDDING_TYPES = ("standard", "shortformer", "rotary", "relative", "alibi", "none")
NORMALIZATION_TYPES = (None, "LN", "LNPre", "RMS", "RMSPre")
ACT_FNS = ("relu", "gelu", "gelu_new", "silu")
ATTENTION_DIRS = ("causal", "bidirectional")


@dataclass
class HookedTransformerConfig:
    """Architecture of a `inducthead.HookedTransformer` (TransformerLens field names).

    TL fields: n_layers, d_model, n_ctx, d_head, n_heads (default d_model // d_head), d_vocab,
    d_vocab_out (-1: d_vocab), attn_only, d_mlp (default 4·d_model unless attn_only), act_fn,
    normalization_type (None | "LN" | "LNPre" | "RMS" | "RMSPre"), positional_embedding_type,
    eps, use_attn_scale, attn_scale (-1: sqrt(d_head)), use_attn_result, use_split_qkv_input,
    rotary_dim, rotary_base, rotary_adjacent_pairs, seed, initializer_range (-1: 0.8/sqrt(d_model),
    TL's GPT-2 default), init_weights, model_name, n_key_value_heads (grouped-query attention:
    this many key/value heads, each shared by n_heads / n_key_value_heads query heads),
    ungroup_grouped_query_attention (hook_k/hook_v with n_heads heads), attention_dir ("causal" |
    "bidirectional"), use_hook_tokens / use_attn_in / use_hook_mlp_in (the optional hook points),
    default_prepend_bos (text input, with a tokenizer).

    Positional types: "standard" (learned, added to the residual stream); "shortformer" (learned,
    added to the query and key inputs of every layer but never to the residual stream: Olsson et
    al. 2022's and ARENA's attention-only models); "rotary"; "relative" (a learned bias per head
    and offset i - j, with keys further back than `relative_window` masked: Chen et al. 2024's
    windowed RPE); "alibi" (Press et al. 2022 fixed slopes); "none".

    Extras (not in TL): bos_token_id (the beginning-of-sequence token, None if the model has none),
    relative_window (offsets a "relative" head can see; default n_ctx), use_bias (attention, MLP
    and unembedding biases; the papers' small models have none), embed_init_std (std of W_E and
    W_pos at init; None uses initializer_range. N(0, 1) embeddings make induction heads form far
    sooner in small models, measured for the `demo` preset), smear_keys (Olsson et al. 2022,
    "Argument 2": each head's key at j becomes sigma(a_h) k_j + (1 - sigma(a_h)) k_{j-1}, one
    trainable a_h per head (`attn.smear_logit`, 0 at init), the first token's key unchanged;
    hook `attn.hook_k_smeared`).
    """

    n_layers: int
    d_model: int
    n_ctx: int
    d_head: int
    n_heads: int = -1
    d_vocab: int = -1
    d_vocab_out: int = -1
    attn_only: bool = False
    d_mlp: int | None = None
    act_fn: str | None = None
    normalization_type: str | None = "LN"
    positional_embedding_type: str = "standard"
    eps: float = 1e-5
    use_attn_scale: bool = True
    attn_scale: float = -1.0
    use_attn_result: bool = False
    use_split_qkv_input: bool = False
    rotary_dim: int | None = None
    rotary_base: int | float = 10000  # TL 3 configs made from Hugging Face ones hold floats
    rotary_adjacent_pairs: bool = False
    seed: int | None = None
    initializer_range: float = -1.0
    init_weights: bool = True
    model_name: str = "custom"
    n_key_value_heads: int | None = None
    ungroup_grouped_query_attention: bool = False
    attention_dir: str = "causal"
    use_hook_tokens: bool = False
    use_attn_in: bool = False
    use_hook_mlp_in: bool = False
    default_prepend_bos: bool = True
    # --- extras (not in TransformerLens) ---
    bos_token_id: int | None = None
    relative_window: int | None = None
    use_bias: bool = True
    embed_init_std: float | None = None
    smear_keys: bool = False

    def __post_init__(self) -> None:
        # Fields left to be derived (not given): `replace` derives them again, and keeps every
        # value that was given. Not part of the architecture, so not in to_dict() or ==.
        self._derived = frozenset(n for n, unset in _DERIVED.items() if getattr(self, n) == unset)
        self._validate_and_resolve()
        # Runtime attributes TransformerLens tools read from `model.cfg` (TL 3 has them as fields);
        # not part of the architecture, so not in to_dict() or hash(). The model keeps them
        # current when it moves or changes dtype.
        self.device: str | None = None
        self.dtype = torch.float32
        self.tokenizer_name: str | None = None  # TL 3's: the tokenizer the model loads
        self.tokenizer_prepends_bos: bool | None = None  # set by set_tokenizer
        # TL 3's count of "hidden weight" parameters (attention and MLP matrices only)
        mlp = 0 if self.attn_only else 2 * self.d_model * self.d_mlp
        self.n_params = self.n_layers * (4 * self.d_model * self.d_head * self.n_heads + mlp)

    # ------------------------------------------------------------------ validation
    def _validate_and_resolve(self) -> None:
        for name in ("n_layers", "d_model", "n_ctx", "d_head"):
            _check_positive_int(name, getattr(self, name))
        if self.n_heads == -1:
            if self.d_model % self.d_head:
                raise ValueError(
                    f"HookedTransformerConfig.n_heads: not given and d_model={self.d_model} is "
                    f"not a multiple of d_head={self.d_head}; pass n_heads explicitly."
                )
            self.n_heads = self.d_model // self.d_head
        _check_positive_int("n_heads", self.n_heads)
        if isinstance(self.d_vocab, bool) or not isinstance(self.d_vocab, int) or self.d_vocab < 1:
            raise ValueError(
                "HookedTransformerConfig.d_vocab must be a positive int (the number of token "
                f"ids), got {self.d_vocab!r}."
            )
        if self.d_vocab_out == -1:
            self.d_vocab_out = self.d_vocab
        _check_positive_int("d_vocab_out", self.d_vocab_out)

        if self.attn_only:
            if self.d_mlp is not None:
                raise ValueError(
                    f"HookedTransformerConfig.d_mlp={self.d_mlp} conflicts with attn_only=True: an "
                    "attention-only model has no MLP. Drop d_mlp or set attn_only=False."
                )
            if self.act_fn is not None:
                raise ValueError(
                    f"HookedTransformerConfig.act_fn={self.act_fn!r} conflicts with "
                    "attn_only=True: "
                    "an attention-only model has no MLP. Drop act_fn or set attn_only=False."
                )
        else:
            if self.d_mlp is None:
                self.d_mlp = 4 * self.d_model
            _check_positive_int("d_mlp", self.d_mlp)
            if self.act_fn is None:
                self.act_fn = "gelu"
            _check_choice("act_fn", self.act_fn, ACT_FNS)

        self._validate_tl_options()
        _check_choice("normalization_type", self.normalization_type, NORMALIZATION_TYPES)
        _check_choice(
            "positional_embedding_type", self.positional_embedding_type, POSITIONAL_EMBEDDING_TYPES
        )
        _check_positive_float("eps", self.eps)
        if self.attn_scale == -1.0:
            self.attn_scale = math.sqrt(self.d_head) if self.use_attn_scale else 1.0
        _check_positive_float("attn_scale", self.attn_scale)

        rotary = self._positions_need("rotary_dim", "rotary")
        if rotary:
            if self.rotary_dim is None:
                self.rotary_dim = self.d_head
            if (
                not isinstance(self.rotary_dim, int)
                or self.rotary_dim < 2
                or self.rotary_dim % 2
                or self.rotary_dim > self.d_head
            ):
                raise ValueError(
                    f"HookedTransformerConfig.rotary_dim must be an even int in [2, d_head="
                    f"{self.d_head}], got {self.rotary_dim!r}."
                )
            _check_positive_float("rotary_base", self.rotary_base)

        if self._positions_need("relative_window", "relative"):
            if self.relative_window is None:
                self.relative_window = self.n_ctx
            _check_positive_int("relative_window", self.relative_window)
            self.relative_window = min(self.relative_window, self.n_ctx)

        if self.bos_token_id is not None and (
            isinstance(self.bos_token_id, bool)
            or not isinstance(self.bos_token_id, int)
            or not 0 <= self.bos_token_id < self.d_vocab
        ):
            raise ValueError(
                f"HookedTransformerConfig.bos_token_id must be None or an int in [0, d_vocab="
                f"{self.d_vocab}), got {self.bos_token_id!r}."
            )
        if not isinstance(self.model_name, str):
            raise ValueError(
                f"HookedTransformerConfig.model_name must be a string, got {self.model_name!r}."
            )
        if self.initializer_range == -1.0:
            self.initializer_range = 0.8 / math.sqrt(self.d_model)
        _check_positive_float("initializer_range", self.initializer_range)
        if self.embed_init_std is not None:
            _check_positive_float("embed_init_std", self.embed_init_std)
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int)
        ):
            raise ValueError(
                f"HookedTransformerConfig.seed must be None or an int, got {self.seed!r}."
            )
        for name in (
            "attn_only",
            "use_attn_scale",
            "use_attn_result",
            "use_split_qkv_input",
            "rotary_adjacent_pairs",
            "init_weights",
            "use_bias",
            "ungroup_grouped_query_attention",
            "use_hook_tokens",
            "use_attn_in",
            "use_hook_mlp_in",
            "default_prepend_bos",
            "smear_keys",
        ):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(
                    f"HookedTransformerConfig.{name} must be True or False, got "
                    f"{getattr(self, name)!r}."
                )

    def _validate_tl_options(self) -> None:
        """TransformerLens 3's attention and hook options."""
        kv = self.n_key_value_heads
        if kv is not None:
            _check_positive_int("n_key_value_heads", kv)
            if self.n_heads % kv:
                raise ValueError(
                    f"HookedTransformerConfig.n_key_value_heads={kv} must divide n_heads="
                    f"{self.n_heads} (each key/value head serves n_heads / n_key_value_heads "
                    "query heads)."
                )
            if self.use_attn_in:
                raise ValueError(
                    "HookedTransformerConfig.use_attn_in does not work with grouped-query "
                    "attention (n_key_value_heads); use use_split_qkv_input instead (as in TL)."
                )
        _check_choice("attention_dir", self.attention_dir, ATTENTION_DIRS)
        if self.use_hook_mlp_in and self.attn_only:
            raise ValueError(
                "HookedTransformerConfig.use_hook_mlp_in needs an MLP; this model is attn_only."
            )

    def _positions_need(self, name: str, kind: str) -> bool:
        """Whether positions are `kind`; ValueError if field `name` is set for another kind."""
        if getattr(self, name) is not None and self.positional_embedding_type != kind:
            raise ValueError(
                f"HookedTransformerConfig.{name}={getattr(self, name)} needs "
                f"positional_embedding_type={kind!r}, got {self.positional_embedding_type!r}."
            )
        return self.positional_embedding_type == kind

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; `from_dict(cfg.to_dict()) == cfg`."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HookedTransformerConfig:
        """Build from a dict (ours, or a TransformerLens 3 `cfg.to_dict()`).

        TL 3 keys that cannot change the function (loading, devices, hook flags) are dropped; TL 3
        settings our model does not implement are accepted at their TL default and refused by name
        otherwise (`model.tl3_keys`); any other unknown key is an error naming it, so a typo never
        silently changes the architecture.
        """
        if not isinstance(d, dict):
            raise TypeError(
                f"HookedTransformerConfig.from_dict expects a dict, got {type(d).__name__}."
            )
        known = {f.name for f in dataclasses.fields(cls)}
        d = tl3_normalised(d)
        unknown = sorted(k for k in d if k not in known and k not in TL3_KEYS)
        if unknown:
            raise ValueError(
                f"HookedTransformerConfig.from_dict: unknown field(s) {unknown}; valid fields: "
                f"{sorted(known)}."
            )
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, s: str) -> HookedTransformerConfig:
        return cls.from_dict(json.loads(s))

    def replace(self, **changes: Any) -> HookedTransformerConfig:
        """A copy with `changes`, re-validated. Values that were given (to the constructor, or
        to an earlier `replace`) are kept; fields that were derived (n_heads from d_model and
        d_head, d_mlp, initializer_range, relative_window, ...) are derived again from the new
        values. A config read with `from_dict` holds every field as given."""
        d = self.to_dict()
        d.update(changes)
        for name in self._derived - set(changes):
            d[name] = _DERIVED[name]
        return type(self).from_dict(d)

    def hash(self) -> str:
        """Short content hash of the architecture (stored in checkpoint metadata)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]


# TL 3 / ARENA cells pass TL 3's keywords to the constructor itself (`model.tl3_keys`)
HookedTransformerConfig.__init__ = init_taking_tl3_keywords(
    HookedTransformerConfig.__init__, {f.name for f in dataclasses.fields(HookedTransformerConfig)}
)


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"HookedTransformerConfig.{name} must be a positive int, got {value!r}.")


def _check_positive_float(name: str, value: Any) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(
            f"HookedTransformerConfig.{name} must be a positive number, got {value!r}."
        )


def _check_choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(
            f"HookedTransformerConfig.{name}={value!r} is not supported; choose one of "
            f"{', '.join(repr(a) for a in allowed)}."
        )


# Named configs (the presets register theirs): `resolve_config("demo")` looks names up here, so the
# model layer resolves names without importing the presets that define them.
_NAMED: dict[str, Callable[[], HookedTransformerConfig]] = {}


def register_name(name: str, config: Callable[[], HookedTransformerConfig]) -> None:
    """Make `resolve_config(name)` return `config()`."""
    _NAMED[name] = config


def resolve_config(spec: Any) -> HookedTransformerConfig:
    """A model config from a HookedTransformerConfig, a config dict (ours or TransformerLens 3's
    `cfg.to_dict()`), a registered preset name, or an object with a `.model` config (a preset);
    ValueError for an unknown name, TypeError otherwise."""
    if isinstance(spec, HookedTransformerConfig):
        return spec
    if isinstance(spec, dict):
        return HookedTransformerConfig.from_dict(spec)
    if isinstance(spec, str):
        if spec not in _NAMED:
            raise ValueError(f"unknown preset {spec!r}; available: {', '.join(_NAMED)}.")
        return _NAMED[spec]()
    if isinstance(getattr(spec, "model", None), HookedTransformerConfig):
        return spec.model
    raise TypeError(
        "expected a HookedTransformerConfig, a config dict or a preset name (see "
        f"inducthead.presets.list()), got {type(spec).__name__}."
    )
