"""The minimal induction-head model of Musat et al. 2025 (section 3; provisional details marked).

Two attention-only layers with one head each, merged key-query matrices, identity values, a
residual stream made by concatenation (each layer's output appended, "disentangled", as in
Friedman et al. 2023), no LayerNorm, no MLP, and a linear readout:

    h0_i = [x_i; p_i]                                   (2D: token vector, position vector)
    A1 = causal softmax_j(h0_i^T W1 h0_j),  h1_i = [h0_i; sum_j A1_ij h0_j]          (4D)
    A2 = softmax_j(h1_T^T W2 h1_j) at the query T only,  h2 = [h1_T; sum_j A2_j h1_j] (8D)
    y_hat = W3 h2                                       (D: a vector in token space)

W1 in R^{2D x 2D}, W2 in R^{4D x 4D} and W3 in R^{D x 8D} are the paper's shapes; zero init is
the paper's (Assumption 1, per secondary notes). PROVISIONAL (not read in the paper): layer 1
attends causally including the diagonal; layer 2 runs at the query only and may attend to the
query itself; the readout sees all of h2; the loss is 1/2 ||y_hat - y||^2.

`MinimalInductionModel` is a TransformerLens `HookedRootModule` with TL-style hook names where
the concept exists (`hook_embed`, `hook_pos_embed`, `blocks.{l}.hook_resid_pre`,
`blocks.{l}.attn.hook_attn_scores` / `hook_pattern` `[batch, head=1, query, key]`,
`blocks.{l}.hook_attn_out`, `blocks.{l}.hook_resid_post`, `hook_out`), so `run_with_cache`,
`run_with_hooks` and hook-based ablations work on it; `inducthead.detect(model)`, `verify` and the
other tools run on its exact standard form (`to_hooked_transformer`, module `convert`).
`forward_weights` is the same computation on explicit weights with leading model dimensions
(many models in one batched call).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from transformer_lens import HookedRootModule

from inducthead.papers.common import add_hook_points
from inducthead.papers.musat import subspace

Hook = Callable[[Tensor], Tensor]
HOOK_NAMES = (
    "hook_embed",
    "hook_pos_embed",
    "blocks.0.hook_resid_pre",
    "blocks.0.attn.hook_attn_scores",
    "blocks.0.attn.hook_pattern",
    "blocks.0.hook_attn_out",
    "blocks.0.hook_resid_post",
    "blocks.1.attn.hook_attn_scores",
    "blocks.1.attn.hook_pattern",
    "blocks.1.hook_attn_out",
    "blocks.1.hook_resid_post",
    "hook_out",
)


def _identity(x: Tensor) -> Tensor:
    return x


def forward_weights(
    W: dict[str, Tensor],
    tokens: Tensor,
    positions: Tensor,
    valid: Tensor | None = None,
    hooks: dict[str, Hook] | None = None,
) -> Tensor:
    """The model's output `[..., batch, D]` for weights `W` (`W1 [..., 2D, 2D]`, ...; leading
    dims are a batch of models) on `tokens`, `positions` `[batch, pos, D]` (the query last).
    `valid [batch, pos]` marks real positions (left padding is False): padded keys get no
    attention."""
    h = hooks or {}

    def hk(name: str, x: Tensor) -> Tensor:
        return h.get(name, _identity)(x)

    n = tokens.shape[-2]
    x = hk("hook_embed", tokens)
    p = hk("hook_pos_embed", positions.expand_as(tokens))
    h0 = hk("blocks.0.hook_resid_pre", torch.cat([x, p], -1))  # [b, T, 2D]
    causal = torch.ones(n, n, dtype=torch.bool, device=tokens.device).tril()
    if valid is not None:
        eye = torch.eye(n, dtype=torch.bool, device=tokens.device)
        causal = causal & (valid[:, None, :] | eye)  # a padded row attends to itself only
    s1 = torch.einsum("bid,...de,bje->...bij", h0, W["W1"], h0)
    s1 = hk("blocks.0.attn.hook_attn_scores", s1.unsqueeze(-3)).squeeze(-3)
    a1 = torch.softmax(s1.masked_fill(~causal, float("-inf")), -1)
    a1 = hk("blocks.0.attn.hook_pattern", a1.unsqueeze(-3)).squeeze(-3)
    out1 = hk("blocks.0.hook_attn_out", torch.einsum("...bij,bjd->...bid", a1, h0))
    h1 = torch.cat([h0.expand(*out1.shape[:-1], h0.shape[-1]), out1], -1)
    h1 = hk("blocks.0.hook_resid_post", h1)  # [..., b, T, 4D]
    q = h1[..., -1, :]
    s2 = torch.einsum("...bd,...de,...bje->...bj", q, W["W2"], h1)
    s2 = hk("blocks.1.attn.hook_attn_scores", s2[..., None, None, :])[..., 0, 0, :]
    if valid is not None:
        s2 = s2.masked_fill(~valid, float("-inf"))
    a2 = hk("blocks.1.attn.hook_pattern", torch.softmax(s2, -1)[..., None, None, :])[..., 0, 0, :]
    out2 = hk("blocks.1.hook_attn_out", torch.einsum("...bj,...bjd->...bd", a2, h1))
    h2 = hk("blocks.1.hook_resid_post", torch.cat([q, out2], -1))  # [..., b, 8D]
    return hk("hook_out", torch.einsum("...bd,...yd->...by", h2, W["W3"]))


def mse(out: Tensor, target: Tensor) -> Tensor:
    """The population loss: mean over sequences of 1/2 ||y_hat - y||^2 (`[...]` per model)."""
    return 0.5 * ((out - target) ** 2).sum(-1).mean(-1)


class MinimalInductionModel(HookedRootModule):
    """Musat et al. 2025's disentangled 2-layer attention-only model with full W1, W2, W3.

    >>> model = MinimalInductionModel(D=10)           # zero init (the paper's)
    >>> y_hat, cache = model.run_with_cache(tokens, positions)
    >>> model.coords()                                 # the 19 coordinates (alpha, beta, gamma)
    """

    def __init__(self, D: int, init_std: float = 0.0, seed: int = 0, dtype=torch.float64):
        super().__init__()
        if D < 2 or D % 2:
            raise ValueError(f"D must be an even number >= 2, got {D}.")
        if init_std < 0:
            raise ValueError(f"init_std must be >= 0, got {init_std}.")
        self.D = D
        g = torch.Generator().manual_seed(seed)
        for name, shape in subspace.shapes(D).items():
            w = torch.randn(*shape, generator=g, dtype=dtype) * init_std
            setattr(self, name, nn.Parameter(w))
        add_hook_points(self, HOOK_NAMES)
        self.setup()

    def weights(self) -> dict[str, Tensor]:
        return {"W1": self.W1, "W2": self.W2, "W3": self.W3}

    def forward(self, tokens: Tensor, positions: Tensor, valid: Tensor | None = None) -> Tensor:
        """y_hat `[batch, D]` for `tokens`, `positions` `[batch, pos, D]` (the query last)."""
        if tokens.ndim != 3 or tokens.shape[-1] != self.D:
            raise ValueError(f"tokens must be [batch, pos, D={self.D}], got {tuple(tokens.shape)}.")
        hooks = {name: self.mod_dict[name] for name in HOOK_NAMES}
        return forward_weights(self.weights(), tokens, positions, valid, hooks)

    def coords(self) -> Tensor:
        """The 19 coordinates (`subspace.NAMES` order) of the current weights."""
        with torch.no_grad():
            return subspace.coords({k: v.detach() for k, v in self.weights().items()})

    def residual(self) -> float:
        """Relative norm of the weights outside the 19-dimensional subspace."""
        with torch.no_grad():
            return subspace.residual({k: v.detach() for k, v in self.weights().items()})

    def to_hooked_transformer(self):
        """The exact standard form (`convert.to_hooked_transformer`): token ids in, logits out;
        what `inducthead.detect(model)` and the causal tools analyse."""
        from inducthead.papers.musat.convert import to_hooked_transformer

        return to_hooked_transformer(self)

    def __repr__(self) -> str:
        return f"MinimalInductionModel(D={self.D}: W1 2Dx2D, W2 4Dx4D, W3 Dx8D)"
