"""Hand-built models whose circuits are known exactly: ground truth for detection and ablation.

`induction_circuit()` builds a 2-layer attention-only `HookedTransformer` with one-hot residual
subspaces and hand-set weights:

    residual = [ token one-hot (V) | position one-hot (n_ctx) | previous token (V) | output (V) ]

Layer 0: L0H0 previous-token head (attends i -> i-1, writes the attended token into "previous
token"); L0H1 duplicate-token head (attends to earlier copies of its own token, writes nothing);
L0H2, L0H3 zero heads. Layer 1: L1H0 induction head (query = current token, key = previous-token
subspace, K-composition with L0H0; copies the attended token into "output"); L1H1 anti-induction
head (same attention, writes minus the token); L1H2 positional shortcut (attends to i - P + 1 by
position alone and copies: an induction head only on period-P data); L1H3 zero head (or, with
`redundant=True`, a second induction head sharing L1H0's job). The
unembedding reads the output subspace, so logits = sum of layer-1 head outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from inducthead.model.config import HookedTransformerConfig
from inducthead.model.hooked import HookedTransformer


@dataclass(frozen=True)
class HeadRoles:
    """Which head does what in a hand-built model."""

    previous_token: tuple[int, int] = (0, 0)
    duplicate_token: tuple[int, int] = (0, 1)
    induction: tuple[int, int] = (1, 0)
    anti_induction: tuple[int, int] = (1, 1)
    positional_shortcut: tuple[int, int] = (1, 2)
    zero: tuple[tuple[int, int], ...] = ((0, 2), (0, 3), (1, 3))
    redundant_induction: tuple[int, int] | None = None  # a copy of `induction` (redundant=True)


def induction_circuit(
    d_vocab: int = 40,
    n_ctx: int = 101,
    shortcut_period: int = 25,
    sharpness: float = 30.0,
    induction_strength: float = 10.0,
    anti_strength: float = 4.0,
    shortcut_strength: float = 2.0,
    redundant: bool = False,
) -> tuple[HookedTransformer, HeadRoles]:
    """The hand-built model described in the module docstring, and its `HeadRoles`.

    `sharpness` scales attention scores (softmax is then nearly one-hot); the strengths scale
    what each layer-1 head writes to the logits (induction wins over anti-induction by default).
    `redundant` makes the zero head L1H3 a second induction head, a copy of L1H0: two heads that
    share the job (either alone predicts the repeats when `induction_strength` is well above
    `anti_strength`). Token 0 is BOS.
    """
    if not 2 <= shortcut_period <= n_ctx:
        raise ValueError(f"shortcut_period must lie in [2, n_ctx={n_ctx}], got {shortcut_period}.")
    V, N = d_vocab, n_ctx
    TOK, POS, PREV, OUT = 0, V, V + N, 2 * V + N
    cfg = HookedTransformerConfig(
        n_layers=2,
        d_model=3 * V + N,
        n_heads=4,
        d_head=V + N,
        d_vocab=V,
        n_ctx=N,
        attn_only=True,
        normalization_type=None,
        positional_embedding_type="standard",
        use_attn_scale=False,
        use_bias=False,
        bos_token_id=0,
        init_weights=False,
        model_name="handbuilt-induction",
    )
    model = HookedTransformer(cfg)
    tok, pos = torch.arange(V), torch.arange(N)
    b = sharpness
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.embed.W_E[tok, TOK + tok] = 1.0
        model.pos_embed.W_pos[pos, POS + pos] = 1.0
        model.unembed.W_U[OUT + tok, tok] = 1.0

        a0, a1 = model.blocks[0].attn, model.blocks[1].attn
        # L0H0 previous token: query position i matches key position j = i - 1.
        a0.W_Q[0, POS + pos, pos] = 1.0
        a0.W_K[0, POS + pos[:-1], pos[1:]] = b
        a0.W_V[0, TOK + tok, tok] = 1.0
        a0.W_O[0, tok, PREV + tok] = 1.0
        # L0H1 duplicate token: same token scores +b, the query's own position -b.
        a0.W_Q[1, TOK + tok, tok] = 1.0
        a0.W_K[1, TOK + tok, tok] = b
        a0.W_Q[1, POS + pos, V + pos] = 1.0
        a0.W_K[1, POS + pos, V + pos] = -b

        # L1H0 / L1H1: query token matches the key's previous token (K-composition with L0H0).
        layer1 = [(0, induction_strength), (1, -anti_strength)]
        if redundant:
            layer1.append((3, induction_strength))
        for head, strength in layer1:
            a1.W_Q[head, TOK + tok, tok] = 1.0
            a1.W_K[head, PREV + tok, tok] = b
            a1.W_V[head, TOK + tok, tok] = 1.0
            a1.W_O[head, tok, OUT + tok] = strength
        # L1H2 positional shortcut: query position i matches key position i - P + 1.
        P = shortcut_period
        a1.W_Q[2, POS + pos, pos] = 1.0
        a1.W_K[2, POS + pos[: N - P + 1], pos[P - 1 :]] = b
        a1.W_V[2, TOK + tok, tok] = 1.0
        a1.W_O[2, tok, OUT + tok] = shortcut_strength
    model.eval()
    if redundant:
        return model, HeadRoles(zero=((0, 2), (0, 3)), redundant_induction=(1, 3))
    return model, HeadRoles()
