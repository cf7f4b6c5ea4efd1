"""The minimal model as a standard `inducthead.HookedTransformer`, so `detect`, ablations,
patching and the dynamics tools run on it unchanged.

The disentangled stream is a standard residual stream of width 8D whose layers write into
empty slots: the embedding fills slots [x, p] (token and position vectors), layer 1 copies
h0 into [a1x, a1p] (W_V = I on h0, W_O = I into the next 2D slots), layer 2 copies h1 into the
last 4D slots, and the unembedding is W3 followed by the token frame: the logit of token t is
e_t . y_hat. W_Q = W1 (resp. W2) and W_K = I factor the merged key-query matrices exactly
(d_head = 4D, layer 1's extra columns zero); no attention scale, no LayerNorm, no biases.

At the last position the converted model computes exactly the minimal model's y_hat (tested to
float64 precision). Layer 2 also runs at every earlier position (each position as a query),
which the minimal model does not compute: that is what lets the per-position induction scores
see it. Token t is the basis vector e_t of R^D (d_vocab = D) and position i the canonical
positional code e_i (n_ctx = D): item slots at even positions, label slots at odd ones, since
M pairs e_{2k} with e_{2k+1} (`data`), so its previous-token head works on label slots only.
"""

from __future__ import annotations

import torch

from inducthead.model import HookedTransformer, HookedTransformerConfig


def to_hooked_transformer(model) -> HookedTransformer:
    """A float64 `HookedTransformer` computing `model` (a `MinimalInductionModel`) on token ids
    (`model_name` "musat-minimal-D{D}"); the minimal model is left untouched."""
    D = model.D
    cfg = HookedTransformerConfig(
        n_layers=2,
        n_heads=1,
        d_model=8 * D,
        d_head=4 * D,
        d_vocab=D,
        n_ctx=D,
        attn_only=True,
        normalization_type=None,
        use_attn_scale=False,
        use_bias=False,
        init_weights=False,
        model_name=f"musat-minimal-D{D}",
    )
    ht = HookedTransformer(cfg).to(torch.float64)
    eye = torch.eye(D, dtype=torch.float64)
    with torch.no_grad():
        for p in ht.parameters():
            p.zero_()
        ht.embed.W_E[:, :D] = eye  # token t -> e_t in slot x
        ht.pos_embed.W_pos[:, D : 2 * D] = eye  # position i -> e_i in slot p
        for layer, W in enumerate((model.W1, model.W2)):
            width = W.shape[0]  # 2D then 4D: what the layer reads (h0, h1)
            attn = ht.blocks[layer].attn
            attn.W_Q[0, :width, :width] = W.detach().to(torch.float64)
            for name in ("W_K", "W_V"):
                getattr(attn, name)[0, :width, :width] = torch.eye(width, dtype=torch.float64)
            attn.W_O[0, :width, width : 2 * width] = torch.eye(width, dtype=torch.float64)
        ht.unembed.W_U[:] = model.W3.detach().to(torch.float64).T  # logit_t = e_t . W3 h2
    return ht
