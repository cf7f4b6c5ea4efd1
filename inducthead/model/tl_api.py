"""The TransformerLens 3 `HookedTransformer` API beyond the forward pass, as a mixin of ours:
stacked weight views (`W_Q[l, h]`, `QK`, `OV`), the `set_use_*` switches, `accumulated_bias`,
`tokens_to_residual_directions` and `all_composition_scores`, which TL tools (ActivationCache,
patching, SVDInterpreter, ...) call on a model."""

from __future__ import annotations

import torch
from torch import Tensor
from transformer_lens import FactoredMatrix
from transformer_lens.utilities import composition_scores


class TransformerLensAPI:
    """Mixed into `HookedTransformer` (which provides `cfg` and `blocks`)."""

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

    # ------------------------------------------------------------------ switches (TL 3)
    def set_use_attn_result(self, use_attn_result: bool) -> None:
        """Compute each head's output (`hook_result`, `[batch, pos, head, d_model]`)."""
        self.cfg.use_attn_result = bool(use_attn_result)

    def set_use_split_qkv_input(self, use_split_qkv_input: bool) -> None:
        """Give every head its own query/key/value input (`hook_q_input`, ...)."""
        self.cfg.use_split_qkv_input = bool(use_split_qkv_input)

    def set_use_hook_mlp_in(self, use_hook_mlp_in: bool) -> None:
        """Hook each MLP's input (`hook_mlp_in`)."""
        if use_hook_mlp_in and self.cfg.attn_only:
            raise ValueError("set_use_hook_mlp_in: this model is attention-only (no MLP).")
        self.cfg.use_hook_mlp_in = bool(use_hook_mlp_in)

    def set_use_attn_in(self, use_attn_in: bool) -> None:
        """Give every head its own attention input (`hook_attn_in`)."""
        if use_attn_in and self.cfg.n_key_value_heads is not None:
            raise ValueError(
                "set_use_attn_in does not work with grouped-query attention; use "
                "set_use_split_qkv_input instead (as in TransformerLens)."
            )
        self.cfg.use_attn_in = bool(use_attn_in)

    def set_ungroup_grouped_query_attention(self, ungroup: bool) -> None:
        """Show grouped keys and values with one entry per query head in `hook_k` / `hook_v`."""
        self.cfg.ungroup_grouped_query_attention = bool(ungroup)

    # ------------------------------------------------------------------ what TL tools call
    def accumulated_bias(
        self, layer: int, mlp_input: bool = False, include_mlp_biases: bool = True
    ) -> Tensor:
        """`[d_model]`: the output biases (b_O, b_out) of layers before `layer` (0..n_layers),
        plus layer `layer`'s b_O when `mlp_input` (TL 3's definition; zeros without biases)."""
        if not 0 <= layer <= self.cfg.n_layers:
            raise ValueError(f"layer must lie in [0, {self.cfg.n_layers}], got {layer}.")
        if mlp_input and layer == self.cfg.n_layers:
            raise ValueError("mlp_input needs a layer below n_layers: there is no MLP after it.")
        total = torch.zeros(self.cfg.d_model, device=self.W_E.device)
        for l in range(layer):
            total = total + self.b_O[l]
            if include_mlp_biases and not self.cfg.attn_only:
                total = total + self.b_out[l]
        return total + self.b_O[layer] if mlp_input else total

    def tokens_to_residual_directions(self, tokens) -> Tensor:
        """The unembedding direction of each token (`W_U[:, token]`): `[d_model]` for one token
        (an int, a one-element tensor, or a string with a tokenizer), `[..., d_model]` for a
        tensor of them."""
        if isinstance(tokens, str):
            tokens = self.to_single_token(tokens)
        tokens = torch.as_tensor(tokens, device=self.W_U.device)
        if tokens.numel() == 1:
            return self.W_U[:, tokens.item()]
        return self.W_U[:, tokens].movedim(0, -1)

    def all_composition_scores(self, mode: str) -> Tensor:
        """`[l1, h1, l2, h2]` composition scores of every pair of heads (Elhage et al. 2021), as
        TL 3 computes them: zero where the second head is not in a later layer, no baseline
        subtracted (`inducthead.analysis.composition_scores` subtracts it)."""
        right = {"Q": self.QK, "K": self.QK.T, "V": self.OV}.get(mode)
        if right is None:
            raise ValueError(f"mode must be one of 'Q', 'K', 'V', got {mode!r}.")
        left = self.OV  # sender heads along dims 0-1, receivers along 2-3
        left = FactoredMatrix(left.A[:, :, None, None], left.B[:, :, None, None])
        right = FactoredMatrix(right.A[None, None], right.B[None, None])
        scores = composition_scores(left, right, broadcast_dims=False)
        layers = torch.arange(self.cfg.n_layers, device=scores.device)
        later = layers[:, None, None, None] < layers[None, None, :, None]
        return torch.where(later, scores, torch.zeros_like(scores))
