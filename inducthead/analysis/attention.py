"""Attention on target keys: the one implementation behind every attention score.

Prefix matching (attention on induction targets), duplicate-token and previous-token scores are
all "the mean, over the queries that have a target, of the attention mass on the target keys".
`TargetAttention` accumulates that per head over batches (and probe groups); `attention_pass`
runs the forward passes that feed it, caching only the attention patterns (and head outputs when
a caller needs them). Used by the score functions, by `detect`, by the scores logged during
training and, through `induction_attention`, by path patching.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from inducthead.analysis.adapters import ModelAdapter
from inducthead.tasks.probes import duplicate_targets, induction_targets

# kind -> the `[batch, q, k]` target keys of each query; "previous" (key q - 1) is read off the
# pattern's diagonal instead of a target matrix.
TARGETS: dict[str, Callable[[Tensor], Tensor]] = {
    "induction": induction_targets,
    "duplicate": duplicate_targets,
}
KINDS = (*TARGETS, "previous")


def target_mass(pattern: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sequence, per-head sum over eligible queries of the attention mass on `targets`
    (`[batch, head]`), and each sequence's number of eligible rows (rows with at least one
    target; `[batch]`). `pattern`: `[batch, head, q, k]`. Targets are sparse (a few keys per
    query), so the mass is gathered at them, never a product with the whole pattern."""
    b, q, k = targets.nonzero(as_tuple=True)
    per_seq = pattern.new_zeros(pattern.shape[:2]).index_add_(0, b, pattern[b, :, q, k])
    return per_seq, targets.any(-1).sum(-1)


def previous_mass(pattern: Tensor, first_query: int = 1) -> tuple[Tensor, Tensor]:
    """Per-sequence, per-head sum of A[i, i-1] over queries i >= first_query (`[batch, head]`),
    and each sequence's number of rows (`[batch]`)."""
    diag = pattern.diagonal(offset=-1, dim1=-2, dim2=-1)[..., first_query - 1 :]
    rows = torch.full((diag.shape[0],), diag.shape[2], device=pattern.device)
    return diag.sum(-1), rows


class TargetAttention:
    """Running per-head sums of attention mass on target keys and counts of eligible queries,
    for one score kind ("induction", "duplicate" or "previous"), per layer and probe group.

    `mean()` is `[n_groups, n_layers, n_heads]`; a layer or group with no eligible query scores 0.
    """

    def __init__(self, kind: str, n_layers: int, n_heads: int, n_groups: int = 1, device=None):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
        self.kind = kind
        self.total = torch.zeros(n_groups, n_layers, n_heads, device=device)
        self.count = torch.zeros(n_groups, n_layers, device=device)

    def targets(self, tokens: Tensor) -> Tensor | None:
        """The `[batch, q, k]` targets of `tokens` for this kind (None for "previous")."""
        return TARGETS[self.kind](tokens) if self.kind in TARGETS else None

    def add(
        self,
        layer: int,
        pattern: Tensor,
        targets: Tensor | None,
        groups: Tensor | None = None,
        first_query: int = 1,
    ) -> None:
        """Add one layer's `pattern` `[batch, head, q, k]` with `targets` (from `.targets`);
        `groups` `[batch]` puts each sequence in a probe group (default: all in group 0).
        `first_query`: the first query a previous-token score counts (after BOS)."""
        pattern = pattern.float()
        if targets is None:
            per_seq, rows = previous_mass(pattern, first_query)
        else:
            per_seq, rows = target_mass(pattern, targets)
        if groups is None:
            groups = torch.zeros(len(per_seq), dtype=torch.long, device=per_seq.device)
        self.total[:, layer].index_add_(0, groups, per_seq)
        self.count[:, layer].index_add_(0, groups, rows.to(self.count.dtype))

    def mean(self, pooled: bool = False) -> Tensor:
        """`[n_groups, n_layers, n_heads]` means, or `[n_layers, n_heads]` over all groups."""
        total, count = self.total, self.count
        if pooled:
            total, count = total.sum(0), count.sum(0)
        return total / count.clamp(min=1)[..., None]


def induction_attention(pattern: Tensor, tokens: Tensor) -> Tensor:
    """Per-head attention on induction targets (the token after an earlier copy of the query's
    token), averaged over the queries that have one: prefix matching on any tokens.
    `pattern`: `[batch, head, q, k]` -> `[head]`."""
    tally = TargetAttention("induction", 1, pattern.shape[1], device=pattern.device)
    tally.add(0, pattern, tally.targets(tokens))
    return tally.mean()[0, 0]


def attention_pass(
    adapter: ModelAdapter,
    tokens: Tensor,
    kinds: Iterable[str],
    *,
    groups: Tensor | None = None,
    n_groups: int = 1,
    batch_size: int | None = None,
    with_z: bool = False,
    on_layer: Callable[[int, slice, Tensor, dict], None] | None = None,
) -> dict[str, TargetAttention]:
    """One forward pass over `tokens` (in chunks of `batch_size` sequences), caching only the
    attention patterns (and `hook_z` when `with_z`), feeding a `TargetAttention` per kind.
    `on_layer(layer, rows, pattern, cache)` sees every layer's float pattern of each chunk (`rows`:
    the chunk's slice of `tokens`), for scores computed from the same pass."""
    tokens = tokens.to(adapter.device)
    L, H = adapter.n_layers, adapter.n_heads
    tallies = {k: TargetAttention(k, L, H, n_groups, adapter.device) for k in kinds}
    first_query = 1 + (adapter.bos_token_id is not None)
    names = [adapter.pattern_hook(l) for l in range(L)]
    if with_z:
        names += [adapter.z_hook(l) for l in range(L)]
    size = batch_size or len(tokens)
    for start in range(0, len(tokens), size):
        rows = slice(start, start + size)
        cache = adapter.run(tokens[rows], names)
        chunk_groups = None if groups is None else groups[rows]
        targets = {k: t.targets(tokens[rows]) for k, t in tallies.items()}
        with torch.no_grad():
            for l in range(L):
                pattern = cache[adapter.pattern_hook(l)].float()
                for kind, tally in tallies.items():
                    tally.add(l, pattern, targets[kind], chunk_groups, first_query)
                if on_layer is not None:
                    on_layer(l, rows, pattern, cache)
    return tallies


def layer_patterns(adapter: ModelAdapter, tokens: Tensor) -> list[Tensor]:
    """Every layer's float attention pattern on `tokens` (one forward, patterns cached only)."""
    names = [adapter.pattern_hook(l) for l in range(adapter.n_layers)]
    cache = adapter.run(tokens, names)
    return [cache[n].float() for n in names]
