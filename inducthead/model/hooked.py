"""`HookedTransformer`: the papers' small transformers on TransformerLens's `HookedRootModule`.

Module, parameter and hook names are TransformerLens 3's (`blocks.{l}.attn.hook_pattern`,
`blocks.{l}.attn.W_Q`, ...), so `run_with_cache`, `run_with_hooks`, `hooks()`, TL's patching
utilities and ARENA-style code work unchanged, and TL 3 state dicts load into it.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
from collections.abc import Iterator
from typing import Literal

import torch
from torch import Tensor, nn
from transformer_lens import ActivationCache, HookedRootModule
from transformer_lens.hook_points import HookPoint

from inducthead.model.components import Embed, PosEmbed, TransformerBlock, Unembed, make_norm
from inducthead.model.config import HookedTransformerConfig, resolve_config
from inducthead.model.loss import Output, next_token_loss
from inducthead.model.text import TextMethods, load_named_tokenizer
from inducthead.model.tl_api import TransformerLensAPI
from inducthead.model.weight_processing import WeightProcessing

ReturnType = Literal["logits", "loss", "both"] | None


class HookedTransformer(TextMethods, TransformerLensAPI, WeightProcessing, HookedRootModule):
    """A decoder-only transformer with TransformerLens hook points and weight views.

    >>> model = HookedTransformer("demo")             # a preset, or a HookedTransformerConfig
    >>> logits, cache = model.run_with_cache(tokens)  # cache["blocks.1.attn.hook_pattern"]
    >>> model.W_Q.shape                               # [n_layers, n_heads, d_model, d_head]
    """

    def __init__(
        self,
        cfg: HookedTransformerConfig | dict | str,
        init: bool = True,
        *,
        tokenizer=None,
        default_padding_side: str | None = None,
    ):
        """`init=False` skips weight initialisation (the weights are about to be loaded).
        `tokenizer` / `default_padding_side` go to `set_tokenizer`, as in TL 3 (keyword-only
        here: TL 3's second positional argument is the tokenizer, ours `init`)."""
        if not isinstance(init, bool):
            raise TypeError(f"init must be True or False (pass tokenizer=...), got {init!r}.")
        super().__init__()
        # Our own copy: the model writes `cfg.device`, and presets hand out one config object.
        cfg = copy.deepcopy(resolve_config(cfg))
        self.cfg = cfg
        self.tokenizer = None
        # Token-range checks cost a device sync; the trainer turns them off for batches it built.
        self.check_inputs = True
        self.hook_tokens = HookPoint()  # [batch, pos]; runs when cfg.use_hook_tokens
        self.embed = Embed(cfg)
        self.hook_embed = HookPoint()
        if cfg.positional_embedding_type in ("standard", "shortformer"):
            self.pos_embed = PosEmbed(cfg)
            self.hook_pos_embed = HookPoint()
        self.blocks = nn.ModuleList([TransformerBlock(cfg) for _ in range(cfg.n_layers)])
        self.ln_final = make_norm(cfg)
        self.unembed = Unembed(cfg)
        if cfg.init_weights and init:
            self.init_weights()
        # TL 3: the model is built on cfg.device in cfg.dtype (set by the config's `device=` /
        # `dtype=`, or the config of a model already moved); by default float32 on the CPU
        device, dtype = cfg.device, cfg.dtype
        if dtype != torch.float32 or device is not None:
            self.to(device=device, dtype=dtype)
        self.cfg.device = str(self.embed.W_E.device)
        self.setup()  # names the HookPoints (HookedRootModule)
        if tokenizer is None and cfg.tokenizer_name is not None:
            tokenizer = load_named_tokenizer(cfg.tokenizer_name)  # as TL 3 does (None: warned)
        if tokenizer is not None:
            self.set_tokenizer(tokenizer, default_padding_side)

    def _apply(self, fn, *args, **kwargs):
        """Keep `cfg.device` and `cfg.dtype` (read by TransformerLens tools) current through
        .to() / .cuda() / .half() / ..."""
        out = super()._apply(fn, *args, **kwargs)
        self.cfg.device = str(self.embed.W_E.device)
        self.cfg.dtype = self.embed.W_E.dtype
        return out

    def add_hook(self, name, hook, dir="fwd", is_permanent=False, level=None, prepend=False):
        """TransformerLens's `add_hook`; an unknown hook name is a `HookNameError` (a KeyError)
        saying what the model has, instead of a bare KeyError."""
        if isinstance(name, str) and name not in self.mod_dict:
            raise HookNameError(name, self)
        super().add_hook(name, hook, dir, is_permanent, level, prepend)

    def _enable_hook_with_name(self, name, hook, dir):
        # what `hooks()` / `run_with_hooks` call for each hook name
        if name not in self.mod_dict:
            raise HookNameError(name, self)
        return super()._enable_hook_with_name(name, hook, dir)

    @contextlib.contextmanager
    def fast_attention(self, enabled: bool = True) -> Iterator[HookedTransformer]:
        """Within the block, attention may take `scaled_dot_product_attention` when no hook reads
        or edits the pattern (training speed); outside it, the explicit path always runs, so an
        output never depends on the hooks attached. `inducthead.train` trains under it."""
        blocks = [block.attn for block in self.blocks]
        before = [attn.sdpa for attn in blocks]
        for attn in blocks:
            attn.sdpa = enabled
        try:
            yield self
        finally:
            for attn, was in zip(blocks, before, strict=True):
                attn.sdpa = was

    # ------------------------------------------------------------------ init
    def init_weights(self) -> None:
        """TL's GPT-2 init: every `W_*` ~ N(0, initializer_range), biases 0, norm weights 1;
        `W_E`/`W_pos` use `embed_init_std` when set. Seeded by `cfg.seed` without touching the
        global RNG."""
        cfg = self.cfg
        with torch.random.fork_rng(devices=[]):
            if cfg.seed is not None:
                torch.manual_seed(cfg.seed)
            for name, param in self.named_parameters():
                leaf = name.rsplit(".", 1)[-1]
                if leaf in ("W_E", "W_pos") and cfg.embed_init_std is not None:
                    nn.init.normal_(param, std=cfg.embed_init_std)
                elif leaf.startswith("W_"):
                    nn.init.normal_(param, std=cfg.initializer_range)
                elif leaf == "w":
                    nn.init.ones_(param)
                else:
                    nn.init.zeros_(param)

    # ------------------------------------------------------------------ forward
    def validate_tokens(self, tokens) -> Tensor:
        """Return `tokens` as a `[batch, pos]` long tensor, or raise naming what is wrong."""
        if not isinstance(tokens, Tensor):
            hint = (
                "pass a string, or ids from model.to_tokens(text)"
                if self.tokenizer is not None
                else "this model has no tokenizer (set one with model.set_tokenizer), so encode "
                "text yourself or use the task generators"
            )
            raise TypeError(
                f"tokens must be a torch.Tensor of token ids, got {type(tokens).__name__}: {hint}."
            )
        if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
            raise TypeError(f"tokens must be an integer tensor (torch.long), got {tokens.dtype}.")
        if tokens.ndim == 1:
            tokens = tokens.unsqueeze(0)
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be [batch, pos], got shape {tuple(tokens.shape)}.")
        batch, pos = tokens.shape
        if batch == 0 or pos == 0:
            raise ValueError(f"tokens is empty (shape {tuple(tokens.shape)}).")
        if pos > self.cfg.n_ctx:
            raise ValueError(
                f"sequence length {pos} exceeds the model's n_ctx={self.cfg.n_ctx}; "
                f"truncate or split the input."
            )
        if self.check_inputs:
            lo, hi = int(tokens.min()), int(tokens.max())
            if lo < 0 or hi >= self.cfg.d_vocab:
                raise ValueError(
                    f"token ids must lie in [0, d_vocab={self.cfg.d_vocab}); "
                    f"got min {lo}, max {hi}."
                )
        return tokens.long().to(self.W_E.device)  # TL 3 moves inputs to the model's device

    def _check_loss_targets(self, tokens: Tensor, return_type: str) -> None:
        """The next-token loss needs two tokens and targets the unembedding can score."""
        if tokens.shape[1] < 2:
            raise ValueError(
                f"return_type={return_type!r} needs at least 2 tokens per sequence (the loss "
                f"predicts token i + 1 from token i); got {tokens.shape[1]}."
            )
        if self.cfg.d_vocab_out < self.cfg.d_vocab and self.check_inputs:
            hi = int(tokens[:, 1:].max())
            if hi >= self.cfg.d_vocab_out:
                raise ValueError(
                    f"return_type={return_type!r}: next-token targets must lie in [0, "
                    f"d_vocab_out={self.cfg.d_vocab_out}), got token id {hi}."
                )

    def forward(
        self,
        input,
        return_type: ReturnType = "logits",
        loss_per_token: bool = False,
        prepend_bos: bool | None = None,
        padding_side: str | None = None,
        start_at_layer: int | None = None,
        tokens: Tensor | None = None,
        shortformer_pos_embed: Tensor | None = None,
        attention_mask: Tensor | None = None,
        stop_at_layer: int | None = None,
    ) -> Tensor | tuple[Tensor, Tensor] | None:
        """TransformerLens 3's forward pass.

        input: token ids `[batch, pos]` (or `[pos]`); text (a string or a list of strings) when
        a tokenizer is set (`prepend_bos`, `padding_side` as in TL); or, with `start_at_layer`,
        the residual stream `[batch, pos, d_model]` entering that block (then pass `tokens` for a
        loss and `shortformer_pos_embed` for shortformer models). return_type: "logits"
        `[batch, pos, d_vocab_out]`; "loss": next-token cross-entropy (mean, or `[batch, pos - 1]`
        with loss_per_token); "both"; None. attention_mask `[batch, pos]`: 1 for tokens, 0 for
        padding, which is never attended to and not in the loss (computed for left-padded text).
        stop_at_layer=l returns the residual stream entering block l. Both layer indices are
        Python slice bounds over the blocks (negative values count from the end).
        """
        if return_type not in ("logits", "loss", "both", None):
            raise ValueError(
                f"return_type must be 'logits', 'loss', 'both' or None, got {return_type!r}."
            )
        if start_at_layer is None:  # text or token ids (inducthead.model.text)
            resid, tokens, shortformer_pos_embed, attention_mask = self.input_to_embed(
                input, prepend_bos, padding_side, attention_mask
            )
        else:
            resid = self._check_residual(input)
            if tokens is not None:
                tokens = self.validate_tokens(tokens)
        if return_type in ("loss", "both"):
            if tokens is None:
                raise ValueError(
                    f"return_type={return_type!r} with start_at_layer needs tokens= (the targets)."
                )
            self._check_loss_targets(tokens, return_type)
        for block in self.blocks[start_at_layer:stop_at_layer]:
            resid = block(resid, shortformer_pos_embed, attention_mask)
        if stop_at_layer is not None:
            return resid
        if return_type is None:
            return None
        logits = self.unembed(self.ln_final(resid))
        if return_type == "logits":
            return logits
        loss = next_token_loss(logits, tokens, loss_per_token, attention_mask)
        return loss if return_type == "loss" else Output(logits, loss)  # TL 3's named tuple

    def embed_tokens(
        self, tokens: Tensor, attention_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """The residual stream entering block 0, and the shortformer position embedding (None
        for other positional types)."""
        if self.cfg.use_hook_tokens:
            tokens = self.hook_tokens(tokens)
        resid = self.hook_embed(self.embed(tokens))
        kind = self.cfg.positional_embedding_type
        if kind == "standard":
            resid = resid + self.hook_pos_embed(self.pos_embed(tokens, attention_mask))
        elif kind == "shortformer":
            return resid, self.hook_pos_embed(self.pos_embed(tokens, attention_mask))
        return resid, None

    def _check_mask(self, attention_mask, tokens: Tensor) -> Tensor:
        mask = torch.as_tensor(attention_mask, device=tokens.device)
        if mask.ndim == 1:
            mask = mask.unsqueeze(0)
        if mask.shape != tokens.shape:
            raise ValueError(
                f"attention_mask has shape {tuple(mask.shape)}, the tokens {tuple(tokens.shape)}: "
                "give one 0/1 entry per token."
            )
        return mask.long()

    def _check_residual(self, resid) -> Tensor:
        if not isinstance(resid, Tensor) or resid.ndim != 3 or resid.shape[-1] != self.cfg.d_model:
            shape = tuple(resid.shape) if isinstance(resid, Tensor) else type(resid).__name__
            raise ValueError(
                f"with start_at_layer, input is the residual stream [batch, pos, d_model="
                f"{self.cfg.d_model}], got {shape}."
            )
        return resid

    def run_with_cache(self, *model_args, return_cache_object: bool = True, **kwargs):
        """`(output, cache)` as in TransformerLens 3: the cache is a TL `ActivationCache`
        (`cache["pattern", 0]`, `accumulated_resid`, `decompose_resid`, ...), or the plain dict
        with `return_cache_object=False`."""
        remove_batch_dim = kwargs.get("remove_batch_dim", False)
        out, cache = super().run_with_cache(*model_args, **kwargs)
        if return_cache_object:
            cache = ActivationCache(cache, self, has_batch_dim=not remove_batch_dim)
        return out, cache

    @property
    def device(self) -> torch.device:
        return self.W_E.device

    def __repr__(self) -> str:
        c = self.cfg
        extra = "attn-only" if c.attn_only else f"d_mlp={c.d_mlp}, {c.act_fn}"
        return (
            f"HookedTransformer({c.model_name!r}: {c.n_layers} layers, {c.n_heads} heads x "
            f"d_head {c.d_head}, d_model {c.d_model}, vocab {c.d_vocab}, n_ctx {c.n_ctx}, "
            f"{c.positional_embedding_type} positions, norm {c.normalization_type}, {extra})"
        )


class HookNameError(KeyError):
    """A hook name the model does not have."""

    def __init__(self, name: str, model: HookedTransformer):
        super().__init__(name)
        self.name, self.n_layers = name, model.cfg.n_layers
        self.close = difflib.get_close_matches(name, list(model.hook_dict), n=3)

    def __str__(self) -> str:
        near = f" Did you mean {', '.join(self.close)}?" if self.close else ""
        return (
            f"this model has no hook point {self.name!r} (layers are blocks.0 .. blocks."
            f"{self.n_layers - 1}; model.hook_dict lists them all).{near}"
        )
