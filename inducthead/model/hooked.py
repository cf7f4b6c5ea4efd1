"""`HookedTransformer`: the papers' small transformers on TransformerLens's `HookedRootModule`.

Module, parameter and hook names are TransformerLens 3's (`blocks.{l}.attn.hook_pattern`,
`blocks.{l}.attn.W_Q`, ...), so `run_with_cache`, `run_with_hooks`, `hooks()`, TL's patching
utilities and ARENA-style code work unchanged, and TL 3 state dicts load into it.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from torch import Tensor, nn
from transformer_lens import FactoredMatrix, HookedRootModule
from transformer_lens.hook_points import HookPoint

from inducthead.model.components import Embed, PosEmbed, TransformerBlock, Unembed, make_norm
from inducthead.model.config import HookedTransformerConfig, resolve_config
from inducthead.model.loss import next_token_loss
from inducthead.model.weight_processing import WeightProcessing

ReturnType = Literal["logits", "loss", "both"] | None


class HookedTransformer(WeightProcessing, HookedRootModule):
    """A decoder-only transformer with TransformerLens hook points and weight views.

    >>> model = HookedTransformer("demo")             # a preset, or a HookedTransformerConfig
    >>> logits, cache = model.run_with_cache(tokens)  # cache["blocks.1.attn.hook_pattern"]
    >>> model.W_Q.shape                               # [n_layers, n_heads, d_model, d_head]
    """

    def __init__(self, cfg: HookedTransformerConfig | dict | str, init: bool = True):
        """`init=False` skips weight initialisation (the weights are about to be loaded)."""
        super().__init__()
        # Our own copy: the model writes `cfg.device`, and presets hand out one config object.
        cfg = copy.deepcopy(resolve_config(cfg))
        self.cfg = cfg
        self.tokenizer = None
        # Token-range checks cost a device sync; the trainer turns them off for batches it built.
        self.check_inputs = True
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
        self.cfg.device = str(self.embed.W_E.device)
        self.setup()  # names the HookPoints (HookedRootModule)

    def _apply(self, fn, *args, **kwargs):
        """Keep `cfg.device` (read by TransformerLens tools) current through .to()/.cuda()/..."""
        out = super()._apply(fn, *args, **kwargs)
        self.cfg.device = str(self.embed.W_E.device)
        return out

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
            raise TypeError(
                f"tokens must be a torch.Tensor of token ids, got {type(tokens).__name__}. "
                "This model has no tokenizer: encode text yourself or use the task generators."
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
        return tokens.long()

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
        tokens: Tensor,
        return_type: ReturnType = "logits",
        loss_per_token: bool = False,
        stop_at_layer: int | None = None,
    ) -> Tensor | tuple[Tensor, Tensor] | None:
        """Run the model on token ids `[batch, pos]` (TL's signature, tokens only).

        return_type: "logits" `[batch, pos, d_vocab_out]`; "loss": next-token cross-entropy on
        `tokens` (mean, or `[batch, pos - 1]` if loss_per_token); "both"; None. With
        `stop_at_layer=l` the residual stream entering block l is returned.
        """
        tokens = self.validate_tokens(tokens)
        if return_type not in ("logits", "loss", "both", None):
            raise ValueError(
                f"return_type must be 'logits', 'loss', 'both' or None, got {return_type!r}."
            )
        if return_type in ("loss", "both"):
            self._check_loss_targets(tokens, return_type)
        resid = self.hook_embed(self.embed(tokens))
        shortformer = None
        kind = self.cfg.positional_embedding_type
        if kind == "standard":
            resid = resid + self.hook_pos_embed(self.pos_embed(tokens))
        elif kind == "shortformer":
            shortformer = self.hook_pos_embed(self.pos_embed(tokens))
        for block in self.blocks[:stop_at_layer]:
            resid = block(resid, shortformer_pos_embed=shortformer)
        if stop_at_layer is not None:
            return resid
        logits = self.unembed(self.ln_final(resid))
        if return_type == "logits":
            return logits
        if return_type is None:
            return None
        loss = next_token_loss(logits, tokens, per_token=loss_per_token)
        return loss if return_type == "loss" else (logits, loss)

    # ------------------------------------------------------------------ weight views (TL names)
    def _stack(self, name: str) -> Tensor:
        params = [getattr(block.attn, name) for block in self.blocks]
        if params[0] is None:  # use_bias=False: report zeros, as a bias-free layer has.
            shape = {"b_O": (self.cfg.d_model,)}.get(name, (self.cfg.n_heads, self.cfg.d_head))
            return torch.zeros(self.cfg.n_layers, *shape, device=self.W_E.device)
        return torch.stack(params)

    def _stack_mlp(self, name: str) -> Tensor:
        if self.cfg.attn_only:
            raise AttributeError(f"{name}: this model is attention-only (cfg.attn_only=True).")
        params = [getattr(block.mlp, name) for block in self.blocks]
        if params[0] is None:
            width = self.cfg.d_mlp if name == "b_in" else self.cfg.d_model
            return torch.zeros(self.cfg.n_layers, width, device=self.W_E.device)
        return torch.stack(params)

    @property
    def W_E(self) -> Tensor:
        return self.embed.W_E

    @property
    def W_pos(self) -> Tensor:
        """`[n_ctx, d_model]`; zeros for positional types without a learned embedding."""
        if hasattr(self, "pos_embed"):
            return self.pos_embed.W_pos
        return torch.zeros(self.cfg.n_ctx, self.cfg.d_model, device=self.W_E.device)

    @property
    def W_U(self) -> Tensor:
        return self.unembed.W_U

    @property
    def b_U(self) -> Tensor:
        b = self.unembed.b_U
        return torch.zeros(self.cfg.d_vocab_out, device=self.W_E.device) if b is None else b

    @property
    def W_Q(self) -> Tensor:
        """`[n_layers, n_heads, d_model, d_head]`."""
        return self._stack("W_Q")

    @property
    def W_K(self) -> Tensor:
        return self._stack("W_K")

    @property
    def W_V(self) -> Tensor:
        return self._stack("W_V")

    @property
    def W_O(self) -> Tensor:
        """`[n_layers, n_heads, d_head, d_model]`."""
        return self._stack("W_O")

    @property
    def b_Q(self) -> Tensor:
        return self._stack("b_Q")

    @property
    def b_K(self) -> Tensor:
        return self._stack("b_K")

    @property
    def b_V(self) -> Tensor:
        return self._stack("b_V")

    @property
    def b_O(self) -> Tensor:
        return self._stack("b_O")

    @property
    def W_in(self) -> Tensor:
        return self._stack_mlp("W_in")

    @property
    def W_out(self) -> Tensor:
        return self._stack_mlp("W_out")

    @property
    def b_in(self) -> Tensor:
        return self._stack_mlp("b_in")

    @property
    def b_out(self) -> Tensor:
        return self._stack_mlp("b_out")

    @property
    def QK(self) -> FactoredMatrix:
        """`W_Q W_Kᵀ` per head, `[n_layers, n_heads, d_model, d_model]` (TL)."""
        return FactoredMatrix(self.W_Q, self.W_K.transpose(-2, -1))

    @property
    def OV(self) -> FactoredMatrix:
        """`W_V W_O` per head, `[n_layers, n_heads, d_model, d_model]` (TL)."""
        return FactoredMatrix(self.W_V, self.W_O)

    def all_head_labels(self) -> list[str]:
        return [f"L{l}H{h}" for l in range(self.cfg.n_layers) for h in range(self.cfg.n_heads)]

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
