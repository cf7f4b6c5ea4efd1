"""The authors' model written out equation by equation (Chen et al. 2024, section 3; the
parameter names and shapes of their `TwoLayerTransformer` state dict), and the conversion of
such a state dict into our `GIHModel`.

`reference_forward` is deliberately literal: a dense (L+1) x (L+1) score matrix per head built
lag by lag, one softmax per head, one loop over the subsets of the selector. It is the
known-answer side of the tests and the baseline of `benchmarks/chen.py`; `GIHModel` is the
vectorised, banded, hooked form of the same computation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from inducthead.papers.chen.model import EPS_LOG, SELF_SCORE, GIHModel, subset_degrees

FULL_KEYS = ("layer1.q_proj", "layer1.k_proj", "layer1.o_v_proj", "layer1.norm.weight")


def _is_full(sd: dict) -> bool:
    return all(k in sd for k in FULL_KEYS)


def reference_forward(sd: dict[str, Tensor], tokens: Tensor, n_states: int = 3) -> Tensor:
    """Probabilities `[B, S]` from an authors'-format state dict (`layer1.W` [L, H], optional
    `layer1.q_proj` / `k_proj` / `o_v_proj` [S, S, H] and `layer1.norm.*`, `layer2.C_alpha_list`
    [1, n_subsets], `layer2.a` [1]) on `tokens` `[B, L]`."""
    W = sd["layer1.W"]
    L, H = W.shape
    full = _is_full(sd)
    X = F.one_hot(tokens, n_states).to(W.dtype)
    Xt = torch.cat([X, torch.zeros_like(X[:, :1])], 1)  # [B, L+1, S]
    comps = [Xt]
    for h in range(H):
        R = torch.full((L + 1, L + 1), float("-inf"), dtype=W.dtype)
        for lag in range(h + 1, h + H + 1):  # head h's lags, weight W[lag - 1, h]
            idx = torch.arange(lag, L + 1)
            R[idx, idx - lag] = W[lag - 1, h]
        if full:
            R[torch.arange(L + 1), torch.arange(L + 1)] = SELF_SCORE
            QK = sd["layer1.q_proj"][:, :, h] @ sd["layer1.k_proj"][:, :, h].T
            scores = Xt @ QK @ Xt.transpose(1, 2) + R
        else:
            scores = R.expand(len(tokens), -1, -1)
        A = torch.nan_to_num(torch.softmax(scores, -1))
        z = A @ Xt
        if full:
            z = z @ sd["layer1.o_v_proj"][:, :, h]
            z = F.layer_norm(z, (n_states,), sd["layer1.norm.weight"], sd["layer1.norm.bias"])
        else:
            z = z / (z.norm(dim=-1, keepdim=True) + 1e-7)
        comps.append(z)
    C = sd["layer2.C_alpha_list"].reshape(-1)
    degrees = subset_degrees(H, _max_degree(len(C), H))
    q = [c[:, -1] for c in comps]  # the query slot of each component
    logit = torch.zeros(len(tokens), L, dtype=W.dtype)
    norm = sum(C[i] ** 2 for i in range(len(C)) if degrees[i, 0] == 0)
    for i, row in enumerate(degrees):  # one feature per subset
        phi = torch.ones(len(tokens), L, dtype=W.dtype)
        for c in range(H + 1):
            if row[c]:
                ip = F.relu(torch.einsum("bs,bts->bt", q[c], comps[c][:, :-1]))
                phi = phi * (ip + EPS_LOG)
        logit = logit + C[i] ** 2 * phi
    attn = torch.softmax(sd["layer2.a"] * logit / norm, -1)
    return torch.einsum("bt,bts->bs", attn, X)


def _max_degree(n_subsets: int, n_heads: int) -> int:
    for d in range(1, n_heads + 2):
        if len(subset_degrees(n_heads, d)) == n_subsets:
            return d
    raise ValueError(
        f"layer2.C_alpha_list has {n_subsets} entries: no subset degree bound over {n_heads + 1} "
        f"components gives that many (expected one of "
        f"{[len(subset_degrees(n_heads, d)) for d in range(1, n_heads + 2)]})."
    )


def from_reference_state_dict(sd: dict[str, Tensor], n_states: int | None = None) -> GIHModel:
    """Our `GIHModel` holding the parameters of the authors' `TwoLayerTransformer` (full model:
    `layer1.q_proj` etc. present) or `SimplifiedTwoLayerTransformer` state dict. `n_states`
    is read from the projections when present; the simplified state dict does not fix it (give
    it; default 3). ValueError naming the key when a shape or key is wrong."""
    if "layer1.W" not in sd or "layer2.C_alpha_list" not in sd or "layer2.a" not in sd:
        missing = [k for k in ("layer1.W", "layer2.C_alpha_list", "layer2.a") if k not in sd]
        raise ValueError(
            f"not a Chen et al. TwoLayerTransformer state dict: missing {missing} (keys: "
            f"{sorted(sd)[:8]}...)."
        )
    W = sd["layer1.W"]
    if W.ndim != 2:
        raise ValueError(f"layer1.W must be [L, H], got {tuple(W.shape)}.")
    L, H = W.shape
    full = _is_full(sd)
    if full:
        S = sd["layer1.q_proj"].shape[0]
        for k in ("layer1.q_proj", "layer1.k_proj", "layer1.o_v_proj"):
            if tuple(sd[k].shape) != (S, S, H):
                raise ValueError(f"{k} must be [S, S, H] = {(S, S, H)}, got {tuple(sd[k].shape)}.")
        if n_states is not None and n_states != S:
            raise ValueError(f"n_states={n_states} but the projections are {S} x {S}.")
    else:
        S = n_states or 3
    C = sd["layer2.C_alpha_list"].reshape(-1)
    D = _max_degree(len(C), H)
    if "layer2.mydegree" in sd:  # the authors save all (max degree + 1)^(H+1) rows
        saved = sd["layer2.mydegree"]
        kept = saved[saved.sum(1) <= D] if len(saved) != len(C) else saved
        if not torch.equal(kept.float(), subset_degrees(H, D)):
            raise ValueError("layer2.mydegree lists the subsets in an order we do not know.")
    model = GIHModel(S, L, H, D, simplified=not full)
    with torch.no_grad():
        model.W.copy_(W)
        model.C.copy_(C)
        model.a.copy_(sd["layer2.a"].reshape(1))
        if full:
            model.q_proj.copy_(sd["layer1.q_proj"])
            model.k_proj.copy_(sd["layer1.k_proj"])
            model.o_v_proj.copy_(sd["layer1.o_v_proj"])
            model.norm.weight.copy_(sd["layer1.norm.weight"])
            model.norm.bias.copy_(sd["layer1.norm.bias"])
    return model


def to_reference_state_dict(model: GIHModel) -> dict[str, Tensor]:
    """The inverse: our parameters under the authors' names and shapes."""
    sd = {
        "layer1.W": model.W.detach().clone(),
        "layer2.C_alpha_list": model.C.detach().clone()[None],
        "layer2.a": model.a.detach().clone(),
    }
    if not model.simplified:
        for k in ("q_proj", "k_proj", "o_v_proj"):
            sd[f"layer1.{k}"] = getattr(model, k).detach().clone()
        sd["layer1.norm.weight"] = model.norm.weight.detach().clone()
        sd["layer1.norm.bias"] = model.norm.bias.detach().clone()
    return sd
