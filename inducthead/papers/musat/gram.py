"""The model on the 19-dimensional subspace, computed from Gram matrices (no D-wide vectors).

On the subspace every attention score and the loss are sums of coordinates times inner products
of the canonical sequence's vectors, so a model is its 19 coordinates and a sequence is its
token Gram matrix Gx[i, j] = x_i . x_j (positions are orthonormal: p_i . p_j = delta_ij and
p_i . M p_j = M[i, j] in the canonical frame). Cost per sequence O(T^2) instead of O(T^2 D), and
the result does not depend on D: this is why gradient flow in W space differs between dimension
conventions only by its rate, dc/dt = -(1/D) dL/dc (`subspace`).

A `GramBatch` holds many cells (each its own N, left-padded to a common length, its sequences
padded to a common count) so seeds and N values train in one batched computation.
`tests/test_musat.py` checks `loss` against `model.forward_weights` on the full matrices.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from inducthead.papers.musat.subspace import complex_structure


@dataclass
class GramBatch:
    """Cells `[C]` x queried pair `[K]` x positions `[T]` (left-padded). The canonical
    sequence's token Gram is Gx = I + e_q u_k^T + u_k e_q^T on the valid positions (distinct
    orthonormal context tokens; the query x_q equals the item at slot u_k), so a batch is:
    `item [C, K, T]` (one-hot u_k), `label [C, K, T]` (one-hot: y_k . x_j), `Gm [T, T]`
    (p_i . M p_j), `valid [C, T]` and `weight [C, K]` (each sequence's share of its cell's
    population mean; 0 for padding)."""

    n_pairs: Tensor
    item: Tensor
    label: Tensor
    Gm: Tensor
    valid: Tensor
    weight: Tensor

    @classmethod
    def build(cls, n_pairs: list[int], dtype=torch.float64, device="cpu") -> GramBatch:
        """One cell per entry of `n_pairs` (repeat an N for several seeds)."""
        if not n_pairs or min(int(n) for n in n_pairs) < 1:
            raise ValueError(f"n_pairs must be a non-empty list of integers >= 1, got {n_pairs}.")
        C, K, T = len(n_pairs), max(n_pairs), 2 * max(n_pairs) + 1
        item = torch.zeros(C, K, T, dtype=dtype)
        label = torch.zeros(C, K, T, dtype=dtype)
        valid = torch.zeros(C, T, dtype=torch.bool)
        weight = torch.zeros(C, K, dtype=dtype)
        for c, N in enumerate(n_pairs):
            o = T - (2 * N + 1)  # even: label slots keep odd indices, so M's pattern holds
            k = torch.arange(N)
            item[c, k, o + 2 * k] = 1.0
            label[c, k, o + 2 * k + 1] = 1.0
            valid[c, o:] = True
            weight[c, :N] = 1.0 / N
        Gm = complex_structure(T + 1, dtype)[:T, :T]
        args = (torch.tensor(n_pairs), item, label, Gm, valid, weight)
        return cls(*(a.to(device) for a in args))

    def __len__(self) -> int:
        return self.item.shape[0]

    def select(self, cells: Tensor) -> GramBatch:
        """The cells at indices `cells`, with this batch's padding (each cell computes exactly
        what it computes in the whole batch)."""
        return GramBatch(
            self.n_pairs[cells.cpu()],
            self.item[cells],
            self.label[cells],
            self.Gm,
            self.valid[cells],
            self.weight[cells],
        )

    def token_gram(self) -> Tensor:
        """Gx `[C, K, T, T]` written out (for checks; `forward` never builds it)."""
        v = self.valid.to(self.item.dtype)
        Gx = torch.diag_embed(v)[:, None].repeat(1, self.item.shape[1], 1, 1)
        Gx[..., -1, :] += self.item
        Gx[..., :, -1] += self.item
        return Gx * (self.weight > 0)[..., None, None]


def _softmax(scores: Tensor, mask: Tensor) -> Tensor:
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), -1)


OBJECTIVES = ("mse", "ce")
EXTRA_TOKENS = 2  # cross-entropy's vocabulary: the 2N context tokens and 2 unused (D = 2N + 2)


def forward(c: Tensor, b: GramBatch, objective: str = "mse") -> dict[str, Tensor]:
    """Loss `[C]` and internals for coordinates `c [C, 19]` (one model per cell): the context
    rows of layer 1's pattern `A1 [C, T, T]` (the same for every query; causal), its query row
    `aq [C, K, T]`, layer 2's pattern `A2 [C, K, T]`, the readout weights `w [C, K, T]`
    (y_hat = sum_l w_l x_l) and `attention [C]`, layer 2's mean attention on the queried
    item's label (the induction head's own output, the same under both objectives).

    `objective` "mse" (the paper's population loss, 1/2 ||y_hat - y||^2) or "ce": cross-entropy
    of the logits x_t . y_hat over a vocabulary of the 2N context tokens and `EXTRA_TOKENS`
    unused ones (logit 0), the target the queried label (PROVISIONAL, ours: the paper trains
    its standard transformer with cross-entropy; this is that loss on the minimal model)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}.")
    T = b.item.shape[-1]
    vf = b.valid.to(c.dtype)[:, None, :]  # [C, 1, T]
    eye = torch.eye(T, dtype=c.dtype, device=c.device)
    causal = torch.ones(T, T, dtype=torch.bool, device=c.device).tril()
    mask1 = causal & (b.valid[:, None, :] | eye.bool())  # [C, T, T]
    a = c[:, :, None, None]
    # context rows: distinct orthonormal tokens (Gx = I there), so layer 1 is k-independent
    A1 = _softmax((a[:, 0] + a[:, 1]) * eye + a[:, 2] * b.Gm, mask1)
    gq = b.item.clone()
    gq[..., -1] = 1.0  # x_q . x_j: its item slot and itself
    gq = gq * vf
    sq = c[:, 0, None, None] * gq + c[:, 1, None, None] * eye[-1] + c[:, 2, None, None] * b.Gm[-1]
    aq = _softmax(sq, b.valid[:, None, :])  # [C, K, T]

    def A1v(v: Tensor) -> Tensor:  # (A1 @ v) per query k: shared rows, then the query row
        out = torch.einsum("cjl,ckl->ckj", A1, v)
        return torch.cat([out[..., :-1], (aq * v).sum(-1, keepdim=True)], -1)

    def Gxv(v: Tensor) -> Tensor:  # Gx @ v = v + e_q (u_k . v) + u_k v_q on valid positions
        out = v * vf + b.item * v[..., -1:]
        return torch.cat([out[..., :-1], out[..., -1:] + (b.item * v).sum(-1, keepdim=True)], -1)

    tok = (gq, A1v(gq), Gxv(aq), A1v(Gxv(aq)))  # (x,x) (x,a1x) (a1x,x) (a1x,a1x)
    s2 = sum(c[:, i, None, None] * t for i, t in enumerate(tok, start=3))
    for n, G in enumerate((eye, b.Gm)):  # I then M in each position block
        Gq = (G[-1] * vf).expand_as(aq)  # p_q . K p_j
        aG = (aq @ G) * vf  # sum_l A1[q, l] G[l, j]
        pos = (Gq, A1v(Gq), aG, A1v(aG))  # (p,p) (p,a1p) (a1p,p) (a1p,a1p)
        s2 = s2 + sum(c[:, 7 + 2 * i + n, None, None] * t for i, t in enumerate(pos))
    A2 = _softmax(s2, b.valid[:, None, :])
    onehot = torch.zeros_like(aq)
    onehot[..., -1] = 1.0
    A2A1 = torch.einsum("ckj,cjl->ckl", A2[..., :-1], A1[:, :-1]) + A2[..., -1:] * aq
    slots = (onehot, aq, A2, A2A1)  # x_q, a1x_q, a2x, a2a1x as weights over the x_l
    w = sum(c[:, 15 + i, None, None] * s for i, s in enumerate(slots))
    target = (w * b.label).sum(-1)  # y . y_hat
    if objective == "mse":
        per_seq = 0.5 * ((w * Gxv(w)).sum(-1) - 2 * target + 1.0)  # 1/2 ||y_hat - y||^2
    else:  # logits x_j . y_hat of the context tokens (the query repeats an item: left out)
        ctx = b.valid.clone()
        ctx[:, -1] = False
        logits = (w * vf + b.item * w[..., -1:]).masked_fill(~ctx[:, None, :], float("-inf"))
        unused = logits.new_zeros(*logits.shape[:-1], EXTRA_TOKENS)
        per_seq = torch.logsumexp(torch.cat([logits, unused], -1), -1) - target
    loss = (per_seq * b.weight).sum(-1)
    attention = ((A2 * b.label).sum(-1) * b.weight).sum(-1)
    return {"loss": loss, "A1": A1, "aq": aq, "A2": A2, "w": w, "attention": attention}


def loss(c: Tensor, b: GramBatch) -> Tensor:
    """The population loss `[C]` (mean over each cell's N sequences of 1/2 ||y_hat - y||^2)."""
    return forward(c, b)["loss"]


def plateau(n_pairs: int, dtype=torch.float64) -> tuple[float, Tensor]:
    """(loss, gamma) of the best readout with both attentions uniform (alpha = beta = 0): the
    loss plateau before the induction head forms (a 4 x 4 least-squares problem, exact)."""
    b = GramBatch.build([n_pairs], dtype)
    Wk = torch.stack([forward(e[None], b)["w"][0] for e in torch.eye(19, dtype=dtype)[15:]])
    Gx = b.token_gram()[0]
    G = torch.einsum("akl,klm,bkm->ab", Wk, Gx, Wk) / n_pairs
    r = torch.einsum("akl,kl->a", Wk, b.label[0]) / n_pairs
    gamma = torch.linalg.pinv(G) @ r  # uniform attention makes a1x_q = a2x: G is singular
    return float(0.5 * (1 - r @ gamma)), gamma
