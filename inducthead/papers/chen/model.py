"""The generalized induction head (GIH) model of Chen et al. 2024, section 3 (equations as in
the authors' `RPE/model.py`, `TwoLayerTransformer` and `SimplifiedTwoLayerTransformer`).

Input: one-hot tokens X [B, L, S] and an appended zero query slot, X~ = [X; 0] (L + 1 rows).

- Layer 1, H heads of relative-position attention. Head h sees lags h+1 .. h+H (the authors'
  layout; lag l has weight W[l-1, h], init w+ at lag h+1, w- elsewhere). The full model adds a
  content term X~_i Q_h K_h^T X~_j and attention to the position itself (score 1e-6), its values
  are X~ O_h (O_h = `o_v_proj[:, :, h]`) and one LayerNorm(S) normalises every head's output; the
  simplified model has positions only and divides each head's output by its L2 norm. The stream
  is the concatenation [X~, v_1, ..., v_H] (S (H + 1) wide: "disentangled").
- Layer 2, the FFN selector and the classifier head in one: for every subset of the H + 1
  components with at most D members (`degrees`), the feature phi_S(q, k_t) = prod_{c in S}
  relu(<q_c, k_t,c>) between the query slot q and each position t < L; the attention logit is
  a sum_S C_S^2 phi_S / sum_{S without the token} C_S^2; the output is the attention-weighted mix
  of the one-hot tokens (a probability vector over S).

p_S = C_S^2 / sum C^2 over the subsets without the token (whose feature is 0 at the query slot,
where the token component is zero) is the selector's weight on the heads in S (the paper's
Fig. 5; S* = {1, 2} is code "110").

Three paths, one function (tested equal): with no hook on layer 1 or the stream, layer 1 is
evaluated once per lag window type and the selector's inner products are looked up
(`papers.chen.windows`; 22-55x faster per training step at the authors' 9000 sequences); with a
hook there, per position, banded (H or H + 1 keys per row, never the L x L matrix); with the
pattern itself hooked, the dense `[B, H, L+1, L+1]` pattern passes through the hook
(TransformerLens shape) and the output is computed from what it returns. The selector's score
is the sum of products `selector_score` unless `hook_features` asks for the features.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformer_lens import HookedRootModule

from inducthead.papers.chen import windows
from inducthead.papers.common import add_hook_points

EPS_LOG = 1e-24  # the authors' product of relu'd inner products is exp(sum deg log(x + 1e-24))
SELF_SCORE = 1e-6  # the full model's score for a position attending to itself
LAYER1 = (  # hooks inside layer 1 and the stream it writes: any of them -> the stream path
    "hook_embed",
    "blocks.0.attn.hook_attn_scores",
    "blocks.0.attn.hook_pattern",
    "blocks.0.attn.hook_z",
    "blocks.0.ln.hook_normalized",
    "blocks.0.hook_resid_post",
)
HOOKS = (
    *LAYER1,
    "blocks.1.ffn.hook_features",
    "blocks.1.attn.hook_attn_scores",
    "blocks.1.attn.hook_pattern",
    "hook_probs",
)


def subset_degrees(n_heads: int, max_degree: int) -> Tensor:
    """`[n_subsets, H + 1]` 0/1 rows over (token, head 1, ..., head H) with at most `max_degree`
    ones, in `itertools.product` order (the authors' column order of C)."""
    rows = [r for r in itertools.product((0, 1), repeat=n_heads + 1) if sum(r) <= max_degree]
    return torch.tensor(rows, dtype=torch.float32)


def subset_codes(degrees: Tensor) -> list[str]:
    """Codes of the token-free subsets ("110" = heads 1 and 2), in C's column order."""
    return ["".join(str(int(v)) for v in r[1:]) for r in degrees if r[0] == 0]


def _softmax(x: Tensor) -> Tensor:
    # torch's softmax and layer_norm kernels are slow over a last dimension of 3-4 (measured
    # 14 ms and 30 ms per call on 1000 sequences); written out they are plain elementwise ops
    e = torch.exp(x - x.amax(-1, keepdim=True))
    return e / e.sum(-1, keepdim=True)


def _layer_norm(x: Tensor, ln: nn.LayerNorm) -> Tensor:
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


class GIHModel(HookedRootModule):
    """Chen et al. 2024's two-layer GIH transformer, hooked (TransformerLens hook names).

    >>> model = GIHModel(simplified=True)            # the authors' joint-training setting
    >>> probs = model(tokens)                          # tokens [B, L] ids -> [B, S]
    >>> model.p_S()                                    # {"110": ..., ...}
    """

    def __init__(
        self,
        n_states: int = 3,
        seq_len: int = 100,
        n_heads: int = 3,
        max_degree: int = 2,
        w_plus: float = 3.0,
        w_minus: float = 0.1,
        a_init: float = 0.01,
        c_init: float = 0.01,
        simplified: bool = True,
        proj_init: float = 0.01,
    ):
        super().__init__()
        for name, v in (("n_states", n_states), ("seq_len", seq_len), ("n_heads", n_heads)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"GIHModel.{name} must be a positive int, got {v!r}.")
        if seq_len < 2 * n_heads:
            raise ValueError(
                f"GIHModel: head h sees lags h+1..h+H, so seq_len must be >= 2 * n_heads = "
                f"{2 * n_heads}, got {seq_len}."
            )
        if not 1 <= max_degree <= n_heads + 1:
            raise ValueError(f"max_degree must be in [1, n_heads + 1], got {max_degree}.")
        self.S, self.L, self.H, self.D = n_states, seq_len, n_heads, max_degree
        self.simplified = simplified
        W = torch.full((seq_len, n_heads), float(w_minus))
        W[torch.arange(n_heads), torch.arange(n_heads)] = float(w_plus)
        self.W = nn.Parameter(W)
        lags = torch.arange(n_heads)[:, None] + torch.arange(1, n_heads + 1)  # [H, H]
        if not simplified:
            lags = torch.cat([torch.zeros(n_heads, 1, dtype=torch.long), lags], 1)
        self.register_buffer("lags", lags, persistent=False)
        self.register_buffer("degrees", subset_degrees(n_heads, max_degree), persistent=False)
        digits = windows.digits(n_states, lags.shape[1])  # every lag window's tokens
        self.register_buffer("window_digits", digits, persistent=False)
        self._window_index = windows.WindowIndex()
        self.C = nn.Parameter(torch.full((len(self.degrees),), float(c_init)))
        self.a = nn.Parameter(torch.tensor([float(a_init)]))
        if not simplified:
            eye = torch.eye(n_states)[..., None].repeat(1, 1, n_heads) * proj_init
            self.q_proj = nn.Parameter(eye.clone())
            self.k_proj = nn.Parameter(eye.clone())
            self.o_v_proj = nn.Parameter(eye.clone())
            self.norm = nn.LayerNorm(n_states)
        add_hook_points(self, HOOKS)
        self.setup()

    # ------------------------------------------------------------------ readouts
    @property
    def token_free(self) -> Tensor:
        return self.degrees[:, 0] == 0

    def codes(self) -> list[str]:
        return subset_codes(self.degrees)

    def p_S(self) -> dict[str, float]:
        """The selector's weights p_S = C_S^2 / sum C^2 over the token-free subsets."""
        c2 = self.C.detach()[self.token_free] ** 2
        return dict(zip(self.codes(), (c2 / c2.sum()).tolist(), strict=True))

    def lag_weights(self) -> Tensor:
        """`[H, K]` the RPE scores of each head's lags (self first in the full model)."""
        rows = (self.lags - 1).clamp(min=0)
        w = self.W.gather(0, rows.T).T  # [H, K]
        return torch.where(self.lags == 0, torch.full_like(w, SELF_SCORE), w)

    def parent_attention(self) -> list[float]:
        """Each head's attention on its own lag (h + 1) from a position with every lag in
        view, by the position scores alone (the simplified model's whole pattern)."""
        p = torch.softmax(self.lag_weights().detach(), -1)
        own = (self.lags == torch.arange(1, self.H + 1, device=self.lags.device)[:, None]).float()
        return (p * own).sum(-1).tolist()

    # ------------------------------------------------------------------ forward
    def forward(self, tokens: Tensor) -> Tensor:
        """Probabilities `[B, S]` of the token after `tokens` (`[B, L]` ids in [0, S))."""
        if tokens.ndim != 2 or tokens.shape[1] != self.L or tokens.dtype.is_floating_point:
            raise ValueError(
                f"tokens must be integer ids [batch, L={self.L}], got {tuple(tokens.shape)} "
                f"{tokens.dtype}."
            )
        if tokens.min() < 0 or tokens.max() >= self.S:
            raise ValueError(f"token ids must be in [0, {self.S}).")
        if self._hooked(*LAYER1):
            X = F.one_hot(tokens, self.S).to(self.W.dtype)
            Xt = self.hook_embed(torch.cat([X, torch.zeros_like(X[:, :1])], 1))  # [B, L+1, S]
            v = self._layer1(Xt, tokens)  # [B, L+1, H, S] normalised head outputs
            stream = torch.cat([Xt[:, :, None], v], 2)  # [B, L+1, H+1, S]
            stream = self.hook_dict["blocks.0.hook_resid_post"](stream.flatten(2))
            stream = stream.view(*v.shape[:2], self.H + 1, self.S)
            q, k = stream[:, -1], stream[:, :-1]
            ip = F.relu((q[:, None] * k).sum(-1))  # [B, L, H+1] per-component inner products
        else:  # nothing reads layer 1: its outputs per window type, the products by lookup
            ip, heads = None, windows.inner_products(self, tokens, self._window_index)
        c2 = self.C**2
        features = self.hook_dict["blocks.1.ffn.hook_features"]
        if self._hooked("blocks.1.ffn.hook_features"):  # the features themselves, for the hook
            if ip is None:
                ip = torch.cat([torch.zeros_like(heads[:1]), heads]).permute(1, 2, 0)
            phi = torch.exp(torch.log(ip + EPS_LOG) @ self.degrees.T)  # [B, L, n_subsets]
            score = features(phi) @ c2
        elif ip is None:  # the token component's product is 0 on the window path
            score = selector_score([EPS_LOG, *(heads + EPS_LOG)], self.degrees, c2)
        else:
            score = selector_score(list((ip + EPS_LOG).unbind(-1)), self.degrees, c2)
        logits = self.a * score / c2[self.token_free].sum()
        logits = self.hook_dict["blocks.1.attn.hook_attn_scores"](logits[:, None, None])
        A2 = self.hook_dict["blocks.1.attn.hook_pattern"](torch.softmax(logits, -1))
        # the attention-weighted one-hot tokens: each position's weight added to its token
        probs = A2.new_zeros(A2.shape[0], self.S).scatter_add(1, tokens, A2[:, 0, 0])
        return self.hook_probs(probs)

    def _hooked(self, *names: str) -> bool:
        """Whether a forward or backward hook is attached at any of `names` (then the path that
        computes that activation must run, so the hook sees it)."""
        return any(self.hook_dict[n].fwd_hooks or self.hook_dict[n].bwd_hooks for n in names)

    def _layer1(self, Xt: Tensor, tokens: Tensor) -> Tensor:
        # Each lag is a shifted view of X~ (zeros before the start): per head, K multiply-adds
        # of [B, L+1, S] tensors, never a [B, L+1, H, K, S] gather (10x less memory traffic)
        B, T1, S = Xt.shape
        lags, H, K = self.lags, self.H, self.lags.shape[1]
        pad = int(lags.max())
        Xp = torch.cat([Xt.new_zeros(B, pad, S), Xt], 1)
        shifted = {int(lag): Xp[:, pad - int(lag) : pad - int(lag) + T1] for lag in lags.unique()}
        keys = torch.arange(T1, device=Xt.device)[:, None, None] - lags  # [T1, H, K]
        valid = keys >= 0
        rpe = self.lag_weights()  # [H, K]
        if self.simplified:  # positions only: the pattern is the same for every sequence
            scores = rpe[None].expand(T1, -1, -1).masked_fill(~valid, float("-inf"))
        else:  # X~ is one-hot (the query slot zero): x_i^T Q_h K_h^T x_j is a table lookup
            qk = torch.einsum("ijh,kjh->hik", self.q_proj, self.k_proj)  # [H, S, S]
            table = F.pad(qk, (0, 1, 0, 1)).flatten()  # id S (the query slot) reads 0
            ids = F.pad(tokens, (0, 1), value=S)  # [B, T1]
            idk = F.pad(ids, (pad, 0), value=S)  # before the start: reads 0 (masked anyway)
            key_ids = torch.stack(
                [idk[:, pad - lags[h, k] :][:, :T1] for h in range(H) for k in range(K)], -1
            )
            head = torch.arange(H, device=Xt.device).repeat_interleave(K) * (S + 1) ** 2
            flat = head + ids[..., None] * (S + 1) + key_ids  # [B, T1, H * K]
            content = table[flat].view(B, T1, H, K)
            scores = (content + rpe).masked_fill(~valid, float("-inf"))
        hooks = self.hook_dict
        dense = "blocks.0.attn.hook_attn_scores", "blocks.0.attn.hook_pattern"
        if self._hooked(*dense):
            full = scores if scores.ndim == 4 else scores.expand(B, -1, -1, -1)
            z = self._dense_layer1(Xt, full, keys, valid)
        else:
            pattern = torch.nan_to_num(_softmax(scores))  # rows without keys: 0
            heads = []
            for h in range(H):
                zh = 0
                for k in range(K):
                    zh = zh + pattern[..., h, k, None] * shifted[int(lags[h, k])]
                heads.append(zh)
            z = torch.stack(heads, 2)  # [B, T1, H, S]
        if not self.simplified:
            z = (z[..., None] * self.o_v_proj.permute(2, 0, 1)).sum(-2)  # per head: z O_h
        z = hooks["blocks.0.attn.hook_z"](z)
        # simplified: each head's output divided by its L2 norm; full: LayerNorm(S)
        v = (
            z / (z.norm(dim=-1, keepdim=True) + 1e-7)
            if self.simplified
            else _layer_norm(z, self.norm)
        )
        return hooks["blocks.0.ln.hook_normalized"](v)

    def _dense_layer1(self, Xt, scores, keys, valid) -> Tensor:
        """The TransformerLens-shaped path: dense scores and pattern `[B, H, L+1, L+1]` through
        their hooks, then z = pattern @ X~ per head."""
        B, T1, H, K = scores.shape
        dense = scores.new_full((B, H, T1, T1 + 1), float("-inf"))  # last column: discard
        b = torch.arange(B, device=scores.device)[:, None, None, None]
        h = torch.arange(H, device=scores.device)[None, None, :, None]
        i = torch.arange(T1, device=scores.device)[None, :, None, None]
        j = torch.where(valid, keys, T1)[None]  # lags before the start go to the discard column
        dense[b, h, i, j] = scores
        dense = dense[..., :T1]
        dense = self.hook_dict["blocks.0.attn.hook_attn_scores"](dense)
        pattern = torch.nan_to_num(torch.softmax(dense, -1))
        pattern = self.hook_dict["blocks.0.attn.hook_pattern"](pattern)
        return torch.einsum("bhij,bjs->bihs", pattern, Xt)

    def loss(self, tokens: Tensor, target: Tensor, kind: str = "nll") -> Tensor:
        """Mean loss of the prediction for `target` `[B]`: "nll" (-log p, p clamped at 1e-8:
        a token absent from the context gets probability 0) or "authors" (cross-entropy of the
        probabilities taken as logits, what the authors' scripts report; >= 0.5514 for S = 3)."""
        probs = self(tokens)
        if kind == "nll":
            return nll(probs, target)
        if kind == "authors":
            return F.cross_entropy(probs, target)
        raise ValueError(f"kind must be 'nll' or 'authors', got {kind!r}.")

    def __repr__(self) -> str:
        kind = "simplified" if self.simplified else "full"
        return (
            f"GIHModel({kind}: S={self.S}, L={self.L}, H={self.H} RPE heads, subsets of <= "
            f"{self.D} components: {len(self.degrees)}; a={float(self.a.detach()):.3g})"
        )


def selector_score(u: list, degrees: Tensor, c2: Tensor) -> Tensor:
    """The selector's score sum_S c2_S prod_{c in S} u_c (`[B, L]`) from the components
    `u[c]` (`[B, L]` tensors, or floats for constant ones: the token component is EPS_LOG on
    the window path), one term per distinct product of tensor components (constants folded
    into the coefficients): the authors' exp(sum deg log u), without the `[B, L, n_subsets]`
    features (u > 0, so the two are equal)."""
    coef: dict[tuple[int, ...], Tensor] = {}
    for row, w in zip(degrees.tolist(), c2, strict=True):
        key = tuple(c for c, d in enumerate(row) if d and not isinstance(u[c], float))
        const = math.prod(u[c] for c, d in enumerate(row) if d and isinstance(u[c], float))
        coef[key] = coef[key] + w * const if key in coef else w * const
    score = 0
    for key, w in coef.items():
        term = w
        for c in key:
            term = term * u[c]
        score = score + term
    return score


def nll(probs: Tensor, target: Tensor) -> Tensor:
    """Mean -log p(target), p clamped at 1e-8 (an unseen token has probability 0)."""
    return -probs.gather(-1, target[:, None]).clamp(min=1e-8).log().mean()


def min_authors_loss(n_states: int) -> float:
    """The floor of the authors' quantity: cross-entropy of a one-hot taken as logits."""
    return math.log(math.e + n_states - 1) - 1.0
