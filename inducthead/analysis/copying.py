"""Copying scores: does a head raise the logits of the tokens it attends to?

- `copying_score`: the eigenvalue form, from the weights (Elhage et al. 2021);
- `empirical_copying_score` / `EmpiricalCopying`: the head's actual output on repeated-token
  probes, through the direct path (after Olsson et al. 2022), from the same forward pass as the
  attention scores when `detect` runs it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from inducthead.analysis.adapters import ModelAdapter
from inducthead.analysis.attention import attention_pass
from inducthead.tasks.probes import candidate_tokens, induction_targets, subsample_rows


def copying_score(model) -> Tensor:
    """Eigenvalue copying score Σλ / Σ|λ| of each head's full OV circuit W_E W_V W_O W_U
    (Elhage et al. 2021, "Copying / Primarily Positive Eigenvalues"; Olsson et al. 2022): +1 when
    every eigenvalue is positive (the head raises the logit of the token it attends to), -1 when
    all are negative. Computed from the d_head × d_head matrix W_O W_U W_E W_V, which has the
    same nonzero eigenvalues; eigenvalues may be complex, Σλ (the trace) is real."""
    return eigen_copying(ModelAdapter.wrap(model)).cpu()


def eigen_copying(adapter: ModelAdapter) -> Tensor:
    """`copying_score` of an adapted model, on its device."""
    if adapter.d_vocab_out != adapter.d_vocab:
        raise ValueError(
            f"copying_score needs d_vocab_out == d_vocab (a square OV circuit), got "
            f"{adapter.d_vocab_out} and {adapter.d_vocab}."
        )
    with torch.no_grad():
        unembed_embed = adapter.W_U @ adapter.W_E  # [d_model, d_model], shared by all heads
        circuit = adapter.W_O @ unembed_embed @ adapter.W_V  # [l, h, dh, dh]
        eig = torch.linalg.eigvals(circuit.double())
        score = eig.sum(-1).real / eig.abs().sum(-1).clamp(min=1e-30)
    return score.float()


def copying_from_cache(
    z: Tensor,
    pattern: Tensor,
    tokens: Tensor,
    rows: Tensor,
    W_O: Tensor,
    unembed: Tensor,
    lookup: Tensor,
    top_keys: int = 4,
) -> tuple[Tensor, int]:
    """Per-head sums of the empirical copying statistic over the query `rows` (`[batch, q]`
    bool) of one layer, and the number of rows; `z` is `[b, q, h, dh]`, `pattern` `[b, h, q, k]`,
    `unembed` the direct-path unembedding of the C candidate tokens (`[d_model, C]`), `lookup`
    each token id's candidate index (-1: not a candidate; `candidate_lookup`).
    See `empirical_copying_score`."""
    b_idx, q_idx = rows.nonzero(as_tuple=True)
    n_cand = unembed.shape[-1]
    # direct logit effects [h, n, C] of each head's output z·W_O through `unembed`; W_O·U first:
    # h·d_head·d_model·C + n·h·d_head·C multiply-adds instead of n·h·d_model·C. Head-major, so
    # the batched matmul writes its output in place (no permuted copy of [n, h, C]).
    out_unembed = W_O.float() @ unembed  # [h, dh, C]
    direct = torch.bmm(z[b_idx, q_idx].float().transpose(0, 1).contiguous(), out_unembed)
    weights = pattern[b_idx, :, q_idx].transpose(0, 1)  # [h, n, k] attention of each query
    top = weights.topk(min(top_keys, weights.shape[-1]), dim=-1)  # the most attended keys
    keys = lookup[tokens[b_idx]]  # [n, k] candidate index of each key's token
    attended = keys.expand(len(top.indices), -1, -1).gather(-1, top.indices)  # [h, n, top]
    # Effects equal to within 1e-5 of the row's largest one are ties (float rounding): compare
    # them on that grid.
    grid = 1e-5 * direct.abs().amax(-1, keepdim=True).clamp(min=1e-30)
    direct = direct.div_(grid).round_()
    target = direct.gather(-1, attended.clamp(min=0))  # [h, n, top]
    # (#candidates gaining less - #gaining more) / (C - 1); the token itself contributes 0.
    # Tokens the unembedding cannot produce (id >= d_vocab_out) count as no preference.
    stat = _sign_sums(target, direct) / max(n_cand - 1, 1)
    stat = stat * (attended >= 0)
    share = top.values / top.values.sum(-1, keepdim=True).clamp(min=1e-30)
    return (share * stat).sum((1, 2)), len(b_idx)


def candidate_lookup(candidates: Tensor, tokens: Tensor) -> Tensor:
    """`[max id + 1]` map from token id to its index in `candidates`, -1 for other ids."""
    size = max(int(candidates.max()), int(tokens.max())) + 1
    lookup = torch.full((size,), -1, dtype=torch.long, device=tokens.device)
    lookup[candidates] = torch.arange(len(candidates), device=tokens.device)
    return lookup


def _sign_sums(target: Tensor, direct: Tensor, chunk_elements: int = 1 << 20) -> Tensor:
    """sum_c sign(target[..., t] - direct[..., c]) -> `target`'s shape, a few rows at a time:
    the `[rows, t, C]` differences then stay in cache (measured 3 vs 27 ms per layer for 12
    heads x 256 queries, 4 keys, 1223 candidates; the values are the same)."""
    target_rows, direct_rows = target.flatten(0, -2), direct.flatten(0, -2)
    rows = max(1, chunk_elements // max(target.shape[-1] * direct.shape[-1], 1))
    parts = [
        (t[..., None] - d[:, None, :]).sign_().sum(-1)
        for t, d in zip(target_rows.split(rows), direct_rows.split(rows), strict=True)
    ]
    return (torch.cat(parts) if parts else target_rows.new_zeros(target_rows.shape)).view_as(target)


class EmpiricalCopying:
    """Accumulates the empirical copying statistic (`empirical_copying_score`) per layer and head
    over the chunks of one `attention_pass` on `tokens`: pass `tally.add` as its `on_layer`."""

    def __init__(
        self,
        adapter: ModelAdapter,
        tokens: Tensor,
        max_queries: int | None = 256,
        max_candidates: int = 1024,
        seed: int = 0,
        top_keys: int = 4,
    ):
        self.adapter, self.tokens, self.top_keys = adapter, tokens.to(adapter.device), top_keys
        self.rows = subsample_rows(induction_targets(self.tokens).any(-1), max_queries, seed)
        self.candidates = candidate_tokens(self.tokens, adapter.d_vocab_out, max_candidates, seed)
        self.lookup = candidate_lookup(self.candidates, self.tokens)
        # read once per call: the candidates' direct-path unembedding and the stacked W_O
        self.unembed = adapter.direct_unembed()[:, self.candidates].float()
        self.W_O = adapter.W_O
        self.total = torch.zeros(adapter.n_layers, adapter.n_heads, device=adapter.device)
        self.count = torch.zeros(adapter.n_layers, device=adapter.device)

    def add(self, layer: int, rows: slice, pattern: Tensor, cache: dict) -> None:
        total, count = copying_from_cache(
            cache[self.adapter.z_hook(layer)],
            pattern,
            self.tokens[rows],
            self.rows[rows],
            self.W_O[layer],
            self.unembed,
            self.lookup,
            self.top_keys,
        )
        self.total[layer] += total
        self.count[layer] += count

    def mean(self) -> Tensor:
        return self.total / self.count.clamp(min=1)[:, None]


def empirical_copying_score(
    model,
    period: int = 25,
    repeats: int = 4,
    n_samples: int = 10,
    seed: int = 0,
    max_candidates: int = 1024,
    max_queries: int | None = 256,
    top_keys: int = 4,
) -> Tensor:
    """Empirical copying, after Olsson et al. 2022's direct-path measure of copying: at queries in
    repeats 2+, each head's actual output is mapped through the direct path (W_U, with the final
    norm's weight folded in) to logit effects, and we ask whether the tokens it attends to gain
    more than other tokens. Normalisation (ours): for each of the query's `top_keys` most
    attended keys, P(that key's token gains more than a random other token) - P(it gains less),
    averaged with the keys' attention as weights; in [-1, 1]: +1 = the attended token is always
    boosted most, -1 = always suppressed most, 0 = no preference. It does not depend on the
    vocabulary size or the output's scale. Vocabularies over `max_candidates` ids are compared
    against that many sampled tokens; at most `max_queries` query rows are used."""
    adapter = ModelAdapter.wrap(model)
    tokens = adapter.probe(period, repeats, n_samples, seed)
    tally = EmpiricalCopying(adapter, tokens, max_queries, max_candidates, seed, top_keys)
    attention_pass(adapter, tokens, (), with_z=True, on_layer=tally.add)
    return tally.mean().cpu()
