"""One interface over the hooked models inducthead analyses.

- our `inducthead.HookedTransformer`;
- TransformerLens 4 `TransformerBridge` models (`boot_native`, `boot_transformers`,
  `boot_tl_legacy`);
- a TransformerLens 3 `HookedTransformer`, when a user has that version (duck-typed: nothing from
  TL 3 is imported);
- a model without a `cfg` that offers `to_hooked_transformer()` (an exact standard form, e.g.
  `papers.musat.MinimalInductionModel`): its standard form is analysed.

All three share TransformerLens's hook names (`blocks.{l}.attn.hook_pattern`, `hook_z`) and
stacked weight views (`W_Q[l, h]` is `[d_model, d_head]`), which is what the scores need.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from inducthead.model import HookedTransformer
from inducthead.tasks.probes import repeated_probe

PATTERN = "blocks.{}.attn.hook_pattern"
Z = "blocks.{}.attn.hook_z"


def _kind(model) -> str:
    if isinstance(model, HookedTransformer):
        return "inducthead"
    if type(model).__name__ == "TransformerBridge" or hasattr(model, "adapter"):
        return "bridge"
    return "transformer_lens"


@dataclass
class ModelAdapter:
    """What the scores need from a hooked model, whatever its class.

    >>> adapter = ModelAdapter.wrap(model)
    >>> cache = adapter.run(tokens, [adapter.pattern_hook(1)])   # only the hooks asked for
    """

    model: Any
    kind: str
    n_layers: int
    n_heads: int
    d_model: int
    d_head: int
    d_vocab: int
    d_vocab_out: int
    n_ctx: int
    bos_token_id: int | None
    name: str
    source: dict | None = None  # {"path", "step"} of the checkpoint the model was loaded from

    @classmethod
    def wrap(cls, model, bos_token_id: int | None | str = "auto") -> ModelAdapter:
        """Adapt `model`; TypeError naming what is missing if it is not a hooked transformer.

        `bos_token_id`: "auto" takes our config's BOS, or for TransformerLens models the
        tokenizer's BOS when the model prepends one; None probes without BOS; an int forces it.
        """
        if isinstance(model, ModelAdapter):
            if bos_token_id != "auto":
                return dataclasses.replace(
                    model, bos_token_id=_check_bos(bos_token_id, model.d_vocab)
                )
            return model
        if getattr(model, "cfg", None) is None and callable(
            getattr(model, "to_hooked_transformer", None)
        ):
            # a model whose architecture is not a standard transformer but has an exact
            # standard form (Musat et al.'s minimal model): analyse that form
            model = model.to_hooked_transformer()
        cfg = getattr(model, "cfg", None)
        missing = [
            a
            for a in ("n_layers", "n_heads", "d_model", "d_head", "d_vocab", "n_ctx")
            if not hasattr(cfg, a)
        ]
        if cfg is None or missing:
            raise TypeError(
                f"{type(model).__name__} is not a hooked transformer: it needs a `cfg` with "
                f"n_layers, n_heads, d_model, d_head, d_vocab and n_ctx (missing: "
                f"{missing or ['cfg']}). Pass an inducthead.HookedTransformer or a TransformerLens "
                "TransformerBridge / HookedTransformer."
            )
        hooks = getattr(model, "hook_dict", None)
        if not callable(getattr(model, "run_with_cache", None)) or hooks is None:
            raise TypeError(
                f"{type(model).__name__} has no run_with_cache/hook_dict: inducthead needs "
                "TransformerLens-style hook points."
            )
        for name in (PATTERN.format(0), Z.format(0)):
            if name not in hooks:
                raise TypeError(
                    f"{type(model).__name__} has no hook point {name!r}: inducthead reads "
                    "attention patterns and head outputs through TransformerLens hook names."
                )
        kind = _kind(model)
        out_vocab = getattr(cfg, "d_vocab_out", -1)
        return cls(
            model=model,
            kind=kind,
            n_layers=cfg.n_layers,
            n_heads=cfg.n_heads,
            d_model=cfg.d_model,
            d_head=cfg.d_head,
            d_vocab=cfg.d_vocab,
            d_vocab_out=out_vocab if out_vocab and out_vocab > 0 else cfg.d_vocab,
            n_ctx=cfg.n_ctx,
            bos_token_id=_bos_token_id(model, kind)
            if bos_token_id == "auto"
            else _check_bos(bos_token_id, cfg.d_vocab),
            name=str(getattr(cfg, "model_name", type(model).__name__)),
            source=getattr(model, "loaded_from", None),
        )

    # ------------------------------------------------------------------ weights
    @property
    def device(self) -> torch.device:
        return self.W_E.device

    @property
    def W_E(self) -> Tensor:
        return self.model.W_E

    @property
    def W_U(self) -> Tensor:
        return self.model.W_U

    @property
    def W_Q(self) -> Tensor:
        """`[n_layers, n_heads, d_model, d_head]` (grouped-query heads expanded)."""
        return self._expand(self.model.W_Q)

    @property
    def W_K(self) -> Tensor:
        return self._expand(self.model.W_K)

    @property
    def W_V(self) -> Tensor:
        return self._expand(self.model.W_V)

    @property
    def W_O(self) -> Tensor:
        """`[n_layers, n_heads, d_head, d_model]`."""
        return self.model.W_O

    def _expand(self, W: Tensor) -> Tensor:
        if W.shape[1] != self.n_heads:  # grouped-query attention: repeat key/value heads
            W = W.repeat_interleave(self.n_heads // W.shape[1], dim=1)
        return W

    def direct_unembed(self) -> Tensor:
        """`[d_model, d_vocab_out]` map from a head's output to its direct-path logit effect:
        W_U with the final norm's weight folded in and, for LayerNorm, centred over d_model (the
        norm's mean subtraction). The norm's positive per-position scale is left out: it does not
        change which tokens a head boosts."""
        W_U = self.W_U
        ln = getattr(self.model, "ln_final", None)
        weight = getattr(ln, "w", None)
        if weight is None:
            weight = getattr(ln, "weight", None)
        if isinstance(weight, Tensor) and weight.shape == (self.d_model,):
            W_U = weight[:, None] * W_U
        norm = str(getattr(self.model.cfg, "normalization_type", None) or "")
        if norm.upper().startswith("LN"):
            W_U = W_U - W_U.mean(0, keepdim=True)
        return W_U

    def check_finite(self) -> None:
        """ValueError naming the first parameter holding NaN or inf. A parameter's sum is
        finite unless an entry is NaN or inf (or the sum overflows: then the entries are checked
        one by one), and a sum costs a fraction of `isfinite(...).all()` (measured 0.3 vs 60 ms
        on 4M floats), so only a non-finite sum pays for the exact check."""
        for name, param in self.model.named_parameters():
            if not torch.isfinite(param.sum()) and not torch.isfinite(param).all():
                raise ValueError(
                    f"parameter {name!r} of {self.name} contains NaN or inf; scores would be "
                    "meaningless. Load an earlier checkpoint."
                )

    # ------------------------------------------------------------------ forward
    @staticmethod
    def pattern_hook(layer: int) -> str:
        return PATTERN.format(layer)

    @staticmethod
    def z_hook(layer: int) -> str:
        return Z.format(layer)

    def run(self, tokens: Tensor, names: Iterable[str], batch_size: int | None = None) -> dict:
        """Forward `tokens` caching only `names`, in batches of `batch_size` (all at once if None);
        returns `{name: tensor}` concatenated over the batch."""
        names = list(names)
        tokens = tokens.to(self.device)
        size = batch_size or tokens.shape[0]
        parts: dict[str, list[Tensor]] = {n: [] for n in names}
        with torch.no_grad():
            for start in range(0, tokens.shape[0], size):
                cache = self._cached_forward(tokens[start : start + size], names)
                for n in names:
                    parts[n].append(cache[n])
        # one chunk: its tensors as they are (a cat would copy every cached pattern)
        return {n: v[0] if len(v) == 1 else torch.cat(v) for n, v in parts.items()}

    def _cached_forward(self, tokens: Tensor, names: list[str]) -> dict:
        """Cache `names`, running no further than needed: when every name lives in a block, the
        pass stops in the last such block, at its `attn.hook_z` when only attention internals
        are wanted there (skipping its W_O), else at its `hook_attn_out` (skipping its MLP);
        later blocks, the final norm and the unembedding never run (for a 2-layer model over a
        third of the work). Otherwise it runs every block (`stop_at_layer=n_layers`)."""
        stop_at = _stop_point(names)
        if stop_at in self.model.hook_dict and hasattr(self.model, "get_caching_hooks"):
            cache, fwd, _ = self.model.get_caching_hooks(names_filter=names)
            with (
                contextlib.suppress(_StopForward),
                # after the caching hooks: a hook point runs its hooks in the order added
                self.model.hooks(fwd_hooks=[*fwd, (stop_at, _stop)]),
            ):
                self.model(tokens)
            return cache
        _, cache = self.model.run_with_cache(
            tokens, names_filter=names, stop_at_layer=self.n_layers
        )
        return cache

    def probe(
        self,
        period: int = 25,
        repeats: float = 4,
        n_samples: int = 10,
        seed: int = 0,
        exclude: Tensor | None = None,
    ) -> Tensor:
        """Repeated-token probe sequences for this model (`tasks.probes.repeated_probe` with its
        vocabulary, BOS and device)."""
        return repeated_probe(
            self.d_vocab,
            period,
            repeats,
            n_samples,
            self.bos_token_id,
            seed,
            self.device,
            exclude=exclude,
        )

    def logits(self, tokens: Tensor, hooks: Iterable = (), start_at_layer: int = 0) -> Tensor:
        """The model's logits on `tokens` with forward `hooks` active (no gradients). With
        `start_at_layer` l > 0, `tokens` is the residual stream entering block l (from
        `residual`) and blocks before l do not run (only when `resumes`)."""
        with torch.no_grad():
            if not start_at_layer:
                return self.model.run_with_hooks(tokens, fwd_hooks=list(hooks))
            self._check_resumes()
            with self.model.hooks(fwd_hooks=list(hooks)):
                return self.model(tokens, start_at_layer=start_at_layer)

    @property
    def resumes(self) -> bool:
        """Whether a forward can start at any block from the residual stream entering it,
        skipping the blocks before (our models: their `start_at_layer` runs only the later
        blocks; not shortformer ones, whose position embedding enters every block). A
        TransformerBridge still runs the earlier blocks and discards them, so it gains nothing."""
        return self.kind == "inducthead" and self.model.cfg.positional_embedding_type != (
            "shortformer"
        )

    def residual(self, x: Tensor, start: int, stop: int, hooks: Iterable = ()) -> Tensor:
        """The residual stream entering block `stop` (`[batch, pos, d_model]`), with forward
        `hooks` active: from token ids `x` when `start` is 0, else from `x`, the residual stream
        entering block `start` (only blocks start..stop-1 run). Only when `resumes`."""
        self._check_resumes()
        with torch.no_grad(), self.model.hooks(fwd_hooks=list(hooks)):
            if start == 0:
                return self.model(x, stop_at_layer=stop)
            return self.model(x, start_at_layer=start, stop_at_layer=stop)

    def _check_resumes(self) -> None:
        if not self.resumes:
            raise ValueError(
                f"{self.name} ({self.kind}) cannot start a forward at a later block; run it from "
                "token ids (start_at_layer=0)."
            )

    def check_tokens(self, tokens: Tensor) -> Tensor:
        """`tokens` as `[batch, pos]` long ids on the model's device; TypeError/ValueError naming
        what is wrong (not an integer matrix, longer than n_ctx, ids outside the vocabulary)."""
        if not isinstance(tokens, Tensor) or tokens.dtype.is_floating_point or tokens.ndim != 2:
            raise TypeError("tokens must be an integer tensor of shape [batch, pos].")
        if tokens.shape[1] > self.n_ctx:
            raise ValueError(
                f"tokens have {tokens.shape[1]} positions, more than n_ctx={self.n_ctx}."
            )
        if tokens.numel() == 0 or tokens.min() < 0 or tokens.max() >= self.d_vocab:
            raise ValueError(f"tokens must be non-empty ids in [0, d_vocab={self.d_vocab}).")
        return tokens.to(self.device).long()

    def __repr__(self) -> str:
        return (
            f"ModelAdapter({self.name!r}, {self.kind}: {self.n_layers}L x {self.n_heads}H, "
            f"d_vocab {self.d_vocab}, n_ctx {self.n_ctx}, BOS {self.bos_token_id})"
        )


class _StopForward(Exception):
    """Raised by a hook to end a forward pass once everything needed is cached."""


def _stop(activation: Tensor, hook) -> None:
    raise _StopForward


# A block's hooks (TL names) that fire at or before its attn.hook_z, and at or before its
# hook_attn_out; anything else in a block may fire as late as its hook_resid_post.
_UP_TO_Z = {
    "hook_resid_pre",
    "hook_attn_in",
    *(f"hook_{x}_input" for x in "qkv"),
    *(f"ln1.hook_{x}" for x in ("scale", "normalized")),
    *(f"attn.hook_{x}" for x in ("q", "k", "v", "rot_q", "rot_k", "k_smeared")),
    *(f"attn.hook_{x}" for x in ("attn_scores", "pattern", "z")),
}
_UP_TO_ATTN_OUT = {*_UP_TO_Z, "attn.hook_result", "hook_attn_out"}


def _stop_point(names: list[str]) -> str | None:
    """The hook after which nothing in `names` is left to compute (None: run every block)."""
    layers = [_block_index(n) for n in names]
    if not layers or None in layers:
        return None
    last = max(layers)
    inner = {n.split(".", 2)[2] for n, l in zip(names, layers, strict=True) if l == last}
    if inner <= _UP_TO_Z:
        return f"blocks.{last}.attn.hook_z"
    return (
        f"blocks.{last}.hook_attn_out"
        if inner <= _UP_TO_ATTN_OUT
        else f"blocks.{last}.hook_resid_post"
    )


def _block_index(name: str) -> int | None:
    parts = name.split(".")
    return int(parts[1]) if len(parts) > 2 and parts[0] == "blocks" and parts[1].isdigit() else None


def _bos_token_id(model, kind: str) -> int | None:
    """Our config's BOS; for TransformerLens models the tokenizer's BOS when the model prepends it
    (TL's default). Models without a tokenizer or BOS token are probed without BOS."""
    if kind == "inducthead":
        return model.cfg.bos_token_id
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:  # a BOS the config declares (`to_bridge` keeps ours), if in range
        bos = getattr(model.cfg, "bos_token_id", None)
        return bos if isinstance(bos, int) and 0 <= bos < model.cfg.d_vocab else None
    prepends = getattr(model.cfg, "default_prepend_bos", True)
    bos = getattr(tokenizer, "bos_token_id", None)
    if not prepends or bos is None or not (0 <= bos < model.cfg.d_vocab):
        return None
    return int(bos)


def _check_bos(bos, d_vocab: int) -> int | None:
    if bos is None:
        return None
    if isinstance(bos, bool) or not isinstance(bos, int) or not 0 <= bos < d_vocab:
        raise ValueError(
            f"bos_token_id must be None, 'auto' or an int in [0, {d_vocab}), got {bos!r}."
        )
    return bos
