"""TransformerLens 3's weight processing, on state dicts in TL names and as `HookedTransformer`
methods (`WeightProcessing`): fold the norms, centre the writing weights and the unembedding,
fold the value biases, refactor W_QK and W_OV.

Each transform rewrites weights so the model computes the same function in a form that is easier
to read: the rationale is Elhage et al. 2021 ("A Mathematical Framework for Transformer
Circuits"), the conventions (what is folded where, in which order, under which condition) are
TransformerLens's `HookedTransformer.process_weights_`. The state-dict functions never modify
their input: they return a new dict (tensors they leave alone are shared with it).

Where TL's result would not compute the same function, we refuse instead (ValueError, naming the
way out): folding a LayerNorm's weight but not its bias, centring what reads an RMS norm, folding
ln1 into a shortformer model's W_Q/W_K (its positions join after ln1). Bias-free models
(`use_bias=False`) whose LayerNorm bias is folded get biases (`use_bias=True`): zeros, plus what
the fold puts there. Shortformer W_pos never reaches the residual stream, so it is not centred
(TL 3.9 centres it, which changes what W_Q/W_K read: its processed shortformer models compute
another function). `fold_layer_norm` drops the norms it folds, where TL 3.9 keeps them as ones
and zeros. Otherwise the results are TL 3.9's, tensor for tensor, grouped-query attention
included (tests/test_tl3_api_differential.py).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from inducthead.model.components import make_norm
from inducthead.model.config import HookedTransformerConfig

StateDict = dict[str, Tensor]
_LOW_PRECISION = (torch.float16, torch.bfloat16)


# ------------------------------------------------------------------ where each weight sits
def _qkv(cfg: HookedTransformerConfig, kind: str, x: str) -> str:
    """The parameter name of W_/b_ Q, K or V: grouped-query attention's shared key/value heads
    are `_W_K`, `_b_K`, `_W_V`, `_b_V` [n_key_value_heads, ...] (TL 3's names)."""
    return f"_{kind}_{x}" if cfg.n_key_value_heads is not None and x in "KV" else f"{kind}_{x}"


def _norm_readers(cfg: HookedTransformerConfig) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """Each norm and the (weight, bias) pairs that read its output; every such weight has
    d_model on axis -2 (`W_Q[h]` is [d_model, d_head], `W_in` [d_model, d_mlp], `W_U`
    [d_model, d_vocab_out])."""
    for l in range(cfg.n_layers):
        attn = f"blocks.{l}.attn"
        yield (
            f"blocks.{l}.ln1",
            [(f"{attn}.{_qkv(cfg, 'W', x)}", f"{attn}.{_qkv(cfg, 'b', x)}") for x in "QKV"],
        )
        if not cfg.attn_only:
            yield f"blocks.{l}.ln2", [(f"blocks.{l}.mlp.W_in", f"blocks.{l}.mlp.b_in")]
    yield "ln_final", [("unembed.W_U", "unembed.b_U")]


def _residual_writers(cfg: HookedTransformerConfig) -> Iterator[str]:
    """Every weight and bias that adds to the residual stream, with d_model on its last axis.
    Shortformer W_pos is not one: it is added to the query and key inputs only."""
    yield "embed.W_E"
    if cfg.positional_embedding_type == "standard":
        yield "pos_embed.W_pos"
    for l in range(cfg.n_layers):
        yield from (f"blocks.{l}.attn.W_O", f"blocks.{l}.attn.b_O")
        if not cfg.attn_only:
            yield from (f"blocks.{l}.mlp.W_out", f"blocks.{l}.mlp.b_out")


def _bias_shapes(cfg: HookedTransformerConfig) -> dict[str, tuple[int, ...]]:
    """Every bias a `use_bias=True` model has, and its shape."""
    h, d, m = cfg.n_heads, cfg.d_head, cfg.d_model
    shapes: dict[str, tuple[int, ...]] = {"unembed.b_U": (cfg.d_vocab_out,)}
    kv = cfg.n_key_value_heads or h
    for l in range(cfg.n_layers):
        attn = f"blocks.{l}.attn"
        shapes.update({f"{attn}.{_qkv(cfg, 'b', x)}": (h if x == "Q" else kv, d) for x in "QKV"})
        shapes[f"blocks.{l}.attn.b_O"] = (m,)
        if not cfg.attn_only:
            shapes.update({f"blocks.{l}.mlp.b_in": (cfg.d_mlp,), f"blocks.{l}.mlp.b_out": (m,)})
    return shapes


def folded_config(cfg: HookedTransformerConfig) -> HookedTransformerConfig:
    """The config that a `fold_layer_norm` state dict loads into: the norms lose their weights
    (LN -> LNPre, RMS -> RMSPre, as TL's `process_weights_` sets) and a bias-free model whose
    LayerNorm bias was folded gets biases (`use_bias=True`). Other configs are returned as is."""
    if cfg.normalization_type == "LN":
        return cfg.replace(normalization_type="LNPre", use_bias=True)
    if cfg.normalization_type == "RMS":
        return cfg.replace(normalization_type="RMSPre")
    return cfg


# ------------------------------------------------------------------ the transforms
def _check_fold(cfg: HookedTransformerConfig, fold_biases: bool, center_weights: bool) -> None:
    kind = cfg.normalization_type
    if kind is None:
        raise ValueError(
            "fold_layer_norm: normalization_type=None, the model has no norm to fold "
            "(process_weights_ skips fold_ln for it with a warning, as TransformerLens does)."
        )
    if kind == "LN" and not fold_biases:
        raise ValueError(
            "fold_layer_norm(fold_biases=False) on a LayerNorm: its bias is added after its "
            "weight, so folding the weight alone would scale the bias too and change the "
            "function. fold_biases=False is for RMS norms (no bias); pass fold_biases=True."
        )
    if kind in ("RMS", "RMSPre") and center_weights:
        raise ValueError(
            f"fold_layer_norm(center_weights=True) on normalization_type={kind!r}: RMS norm "
            "outputs are not zero-mean, so centring the weights that read them would change "
            "the function. Pass center_weights=False (TL's process_weights_ does for RMS)."
        )
    if cfg.positional_embedding_type == "shortformer" and (kind in ("LN", "RMS") or center_weights):
        raise ValueError(
            "fold_layer_norm on a shortformer model: its positions are added to the query and "
            "key inputs after ln1, so folding ln1's weight into W_Q/W_K would rescale them too "
            "(and centring W_Q/W_K would change how they read W_pos). Use "
            "process_weights_(fold_ln=False): the other transforms still apply."
        )


def fold_layer_norm(
    state_dict: StateDict,
    cfg: HookedTransformerConfig,
    fold_biases: bool = True,
    center_weights: bool = True,
) -> StateDict:
    """Fold every norm's weight and bias into the weights that read its output (TL's
    `fold_layer_norm`); the returned dict has no `ln*.w`/`ln*.b` and loads into
    `folded_config(cfg)`.

    A LayerNorm computes `x̂ * w + b` with `x̂ = (x - mean) / scale`, and its output is only read
    linearly, so `(x̂ * w + b) @ W + b_W = x̂ @ (diag(w) W) + (b @ W + b_W)`: queries, keys,
    values, MLP pre-activations and logits are unchanged, and what is left of the norm is a
    per-position centring and rescaling (the rationale of Elhage et al. 2021 for reading weights
    with the norms folded in). `center_weights` then subtracts each folded weight's mean over
    d_model, which x̂ (zero-mean over d_model) never sees. RMS norms have no bias and a
    non-zero-mean output: their weight is folded, nothing is centred. Combinations that would
    change the function raise ValueError.
    """
    _check_fold(cfg, fold_biases, center_weights)
    sd = dict(state_dict)
    if cfg.normalization_type == "LN" and not cfg.use_bias:  # the folded biases need a home
        ref = sd["embed.W_E"]
        for key, shape in _bias_shapes(cfg).items():
            sd.setdefault(key, ref.new_zeros(shape))
    for norm, readers in _norm_readers(cfg):
        w, b = sd.pop(f"{norm}.w", None), sd.pop(f"{norm}.b", None)
        if w is None and cfg.normalization_type in ("LN", "RMS"):
            raise KeyError(
                f"fold_layer_norm: {norm}.w is not in the state dict (normalization_type="
                f"{cfg.normalization_type!r}); was it folded already?"
            )
        for w_key, b_key in readers:
            W = sd[w_key]
            if b is not None:
                sd[b_key] = sd[b_key] + (b[:, None] * W).sum(-2)
            if w is not None:
                W = W * w[:, None]
            if center_weights:
                W = W - W.mean(-2, keepdim=True)
            sd[w_key] = W
    return sd


def center_writing_weights(state_dict: StateDict, cfg: HookedTransformerConfig) -> StateDict:
    """Subtract the mean over d_model from every weight and bias that writes to the residual
    stream (W_E, W_pos, W_O, b_O, W_out, b_out): TL's `center_writing_weights`.

    The residual stream is then zero-mean at every position. Its readers are all LayerNorms,
    which subtract that mean themselves, so nothing downstream of them changes (Elhage et al.
    2021). Only for normalization_type "LN"/"LNPre" (TL's condition); ValueError otherwise.
    """
    if cfg.normalization_type not in ("LN", "LNPre"):
        raise ValueError(
            f"center_writing_weights: normalization_type={cfg.normalization_type!r}; centring "
            "the residual stream preserves the function only when every reader of it is a "
            "LayerNorm (LN or LNPre), which subtracts the mean (TL's process_weights_ skips it)."
        )
    sd = dict(state_dict)
    for key in _residual_writers(cfg):
        if key in sd:  # biases are absent from bias-free models
            sd[key] = sd[key] - sd[key].mean(-1, keepdim=True)
    return sd


def center_unembed(state_dict: StateDict) -> StateDict:
    """Subtract W_U's (and b_U's) mean over the output vocabulary: TL's `center_unembed`.

    Every logit at a position moves by the same amount, and softmax ignores a shift shared by
    all logits: log-probs, probabilities and the loss are unchanged; logits are not."""
    sd = dict(state_dict)
    for key in ("unembed.W_U", "unembed.b_U"):
        if key in sd:
            sd[key] = sd[key] - sd[key].mean(-1, keepdim=True)
    return sd


def fold_value_biases(state_dict: StateDict, cfg: HookedTransformerConfig) -> StateDict:
    """`b_O += Σ_h b_V[h] @ W_O[h]`, then `b_V = 0`: TL's `fold_value_biases`.

    Each query's attention pattern sums to 1, so a head adds `b_V[h] @ W_O[h]` at every position
    whatever it attends to: a constant that belongs to the layer, not to the head. Layer outputs
    are unchanged; `hook_v`, `hook_z` and `hook_result` lose the constant. No-op without biases.
    """
    sd = dict(state_dict)
    key = _qkv(cfg, "b", "V")
    for l in range(cfg.n_layers):
        attn = f"blocks.{l}.attn"
        b_V = sd.get(f"{attn}.{key}")
        if b_V is None:
            continue
        # grouped-query attention: query head h reads value head h // (n_heads / n_kv), as TL 3
        per_head = b_V.repeat_interleave(cfg.n_heads // b_V.shape[0], dim=0)
        sd[f"{attn}.b_O"] = sd[f"{attn}.b_O"] + torch.einsum(
            "hd,hdm->m", per_head, sd[f"{attn}.W_O"]
        )
        sd[f"{attn}.{key}"] = torch.zeros_like(b_V)
    return sd


def _svd_of_product(A: Tensor, B: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """`U, S, V` with `U diag(S) Vᵀ = A Bᵀ`, for `A` [..., m, r] and `B` [..., n, r], without
    forming the m x n product: QR of both factors, SVD of the small core, in float64 where the
    device has it (float32 QR/SVD would add ~1e-5 to a float32 model's log-probs). U [..., m, r],
    S [..., r], V [..., n, r]. Directions with singular value ~0 are arbitrary (e.g. the all-ones
    direction a centred W_O never writes): their columns are zeroed, as is padding when r
    exceeds m or n, so they never show up in the new factors."""
    dtype = A.dtype
    if A.device.type != "mps":
        A, B = A.double(), B.double()
    qa, ra = torch.linalg.qr(A)
    qb, rb = torch.linalg.qr(B)
    u, s, vh = torch.linalg.svd(ra @ rb.mT, full_matrices=False)
    live = (s > s[..., :1] * torch.finfo(s.dtype).eps * max(A.shape[-2:] + B.shape[-2:]))[
        ..., None, :
    ]
    pad = A.shape[-1] - s.shape[-1]
    U, S, V = (F.pad(t, (0, pad)).to(dtype) for t in (qa @ u * live, s, qb @ vh.mT * live))
    return U, S, V


def refactor_factored_attn_matrices(
    state_dict: StateDict, cfg: HookedTransformerConfig
) -> StateDict:
    """Re-factor each head's W_QK and W_OV by their SVDs (TL's experimental method of the same
    name): with `W_Q W_Kᵀ = U S Vᵀ`, `W_Q = U √S`, `W_K = V √S`; with `W_V W_O = U S Vᵀ`,
    `W_V = U S`, `W_O = Vᵀ` (orthonormal rows, so a head's output has the norm of its z).

    Only the products determine a head (Elhage et al. 2021), so attention scores and outputs are
    unchanged. Biases as TL: b_Q, b_K join W_Q, W_K as the weights of a constant input 1 before
    the SVD, preserving the whole bilinear form `(x W_Q + b_Q)·(y W_K + b_K)`; b_V is folded
    into b_O first (`fold_value_biases`). Not for rotary positions, whose scores are not a
    fixed bilinear form of the inputs (ValueError, as TL).
    """
    if cfg.positional_embedding_type == "rotary":
        raise ValueError(
            "refactor_factored_attn_matrices: with rotary positions a head's QK circuit "
            "depends on the query and key positions, so W_Q W_Kᵀ is not what the head computes."
        )
    if cfg.n_key_value_heads is not None:
        raise ValueError(
            "refactor_factored_attn_matrices: with grouped-query attention (n_key_value_heads="
            f"{cfg.n_key_value_heads}) several query heads share one W_K and W_V, so each head's "
            "W_QK and W_OV cannot be re-factored on its own (TL 3.9 refuses it too)."
        )
    sd = fold_value_biases(state_dict, cfg)
    for l in range(cfg.n_layers):
        attn = f"blocks.{l}.attn"
        W_Q, W_K = sd[f"{attn}.W_Q"], sd[f"{attn}.W_K"]
        biased = f"{attn}.b_Q" in sd
        if biased:  # [h, d_model + 1, d_head]: the bias is the weight of a constant input
            W_Q = torch.cat([W_Q, sd[f"{attn}.b_Q"][:, None]], dim=1)
            W_K = torch.cat([W_K, sd[f"{attn}.b_K"][:, None]], dim=1)
        U, S, V = _svd_of_product(W_Q, W_K)
        root = S.sqrt()[..., None, :]
        W_Q, W_K = U * root, V * root
        if biased:
            sd[f"{attn}.b_Q"], sd[f"{attn}.b_K"] = W_Q[:, -1], W_K[:, -1]
            W_Q, W_K = W_Q[:, :-1], W_K[:, :-1]
        sd[f"{attn}.W_Q"], sd[f"{attn}.W_K"] = W_Q, W_K
        U, S, V = _svd_of_product(sd[f"{attn}.W_V"], sd[f"{attn}.W_O"].mT)
        sd[f"{attn}.W_V"], sd[f"{attn}.W_O"] = U * S[..., None, :], V.mT
    return sd


# ------------------------------------------------------------------ the model's methods
class WeightProcessing:
    """TransformerLens 3's weight-processing methods, mixed into `HookedTransformer`.

    The state-dict methods take and return state dicts in TL names, as TL's do, and never touch
    the model; `process_weights_` applies them to the model in place.
    """

    cfg: HookedTransformerConfig

    def fold_layer_norm(
        self, state_dict: StateDict, fold_biases: bool = True, center_weights: bool = True
    ) -> StateDict:
        """See `inducthead.model.weight_processing.fold_layer_norm`; loads into
        `folded_config(model.cfg)`. RMS norms need `center_weights=False`."""
        return fold_layer_norm(state_dict, self.cfg, fold_biases, center_weights)

    def center_writing_weights(self, state_dict: StateDict) -> StateDict:
        """See `inducthead.model.weight_processing.center_writing_weights` (LN/LNPre only)."""
        return center_writing_weights(state_dict, self.cfg)

    def center_unembed(self, state_dict: StateDict) -> StateDict:
        """See `inducthead.model.weight_processing.center_unembed`."""
        return center_unembed(state_dict)

    def fold_value_biases(self, state_dict: StateDict) -> StateDict:
        """See `inducthead.model.weight_processing.fold_value_biases`."""
        return fold_value_biases(state_dict, self.cfg)

    def refactor_factored_attn_matrices(self, state_dict: StateDict) -> StateDict:
        """See `inducthead.model.weight_processing.refactor_factored_attn_matrices`."""
        return refactor_factored_attn_matrices(state_dict, self.cfg)

    def process_weights_(
        self,
        fold_ln: bool = True,
        center_writing_weights: bool = True,
        center_unembed: bool = True,
        refactor_factored_attn_matrices: bool = False,
        fold_value_biases: bool = True,
    ):
        """Process the weights in place, as TL 3's `process_weights_` (which also folds the value
        biases; `fold_value_biases=False`, not in TL's signature, keeps them). Returns the model.

        Under TL's conditions: fold the norms (LN, or RMS without centring; a model without norm
        weights gets a warning, as in TL), fold the value biases, centre the writing weights
        (LN/LNPre only) and the unembedding, then refactor if asked (value biases before
        centring: the same result as TL's order, which re-centres b_O after folding them).
        Log-probs are unchanged, logits up to a constant per position (`center_unembed`).
        Afterwards the norms are weightless (`cfg.normalization_type` LN -> LNPre, RMS ->
        RMSPre; new modules, so hooks added to the old ones are gone) and `ln*.hook_normalized`
        holds `x̂`, as in TL. Errors are raised before anything in the model changes.
        """
        kind = self.cfg.normalization_type
        # Half precision is processed in float32 (as TL); load_state_dict casts back.
        state = {
            k: v.float() if v.dtype in _LOW_PRECISION else v for k, v in self.state_dict().items()
        }
        cfg = self.cfg
        if fold_ln and kind in ("LN", "RMS"):
            state = self.fold_layer_norm(state, fold_biases=True, center_weights=kind == "LN")
            cfg = folded_config(self.cfg)
        elif fold_ln:
            warnings.warn(
                f"process_weights_(fold_ln=True): normalization_type={kind!r} has no norm "
                "weights to fold; skipped, as TransformerLens does.",
                stacklevel=2,
            )
        if fold_value_biases:
            state = self.fold_value_biases(state)
        if center_writing_weights and kind in ("LN", "LNPre"):
            state = self.center_writing_weights(state)
        if center_unembed:
            state = self.center_unembed(state)
        if refactor_factored_attn_matrices:
            state = self.refactor_factored_attn_matrices(state)
        self._adopt_processed(state, cfg)
        return self

    def _adopt_processed(self, state_dict: StateDict, cfg: HookedTransformerConfig) -> None:
        """Rebuild the modules that `cfg` changes (weightless norms, new biases) and load."""
        own = self.cfg  # shared by every block: change it in place
        if cfg.normalization_type != own.normalization_type:
            own.normalization_type = cfg.normalization_type
            for block in self.blocks:
                block.ln1 = make_norm(own)
                if not own.attn_only:
                    block.ln2 = make_norm(own)
            self.ln_final = make_norm(own)
        if cfg.use_bias and not own.use_bias:
            own.use_bias = True
            ref = self.embed.W_E
            for key, shape in _bias_shapes(own).items():
                owner, leaf = key.rsplit(".", 1)
                module = self.get_submodule(owner)
                if getattr(module, leaf) is None:
                    setattr(module, leaf, nn.Parameter(ref.new_zeros(shape)))
        self.load_state_dict(state_dict)
        self.setup()  # names the new hook points
