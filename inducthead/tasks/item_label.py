"""Item-label pairs and a query (Musat et al. 2025's minimal ICL task, as tokens).

x_1 y_1 ... x_N y_N x_q: N distinct items from `n_items`, N labels from `n_labels` (ids after
the items; distinct when `distinct_labels`), the query one of the N items (uniform); the only
scored target is the query's label, at the last position. Which label goes with which item is
drawn afresh for every sequence, so nothing can be memorised: the label must be found in the
context (an induction head: the label's position attends to its item, the query matches it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from inducthead.tasks.base import Batch, Task, generator


@dataclass
class ItemLabelICL(Task):
    """N item-label pairs then a query item; the target is its label (module docstring)."""

    name = "item_label_icl"
    n_pairs: int = 4
    n_items: int = 16
    n_labels: int = 16
    distinct_labels: bool = True
    bos_token_id: int | None = None

    def __post_init__(self) -> None:
        if self.n_pairs < 1:
            raise ValueError(f"ItemLabelICL.n_pairs must be >= 1, got {self.n_pairs}.")
        if self.n_items < self.n_pairs:
            raise ValueError(
                f"ItemLabelICL needs n_items >= n_pairs (distinct items), got {self.n_items} < "
                f"{self.n_pairs}."
            )
        if self.distinct_labels and self.n_labels < self.n_pairs:
            raise ValueError(
                f"distinct labels need n_labels >= n_pairs, got {self.n_labels} < {self.n_pairs}."
            )
        if self.bos_token_id is not None:
            raise ValueError("ItemLabelICL has no BOS token; leave bos_token_id None.")

    @property
    def d_vocab(self) -> int:
        return self.n_items + self.n_labels

    @property
    def seq_len(self) -> int:
        return 2 * self.n_pairs + 1

    def sample(self, batch_size: int, seed: int = 0, device="cpu") -> Batch:
        g = generator(seed, device)
        N = self.n_pairs
        items = torch.rand(batch_size, self.n_items, generator=g, device=device).argsort(-1)[:, :N]
        if self.distinct_labels:
            r = torch.rand(batch_size, self.n_labels, generator=g, device=device)
            labels = r.argsort(-1)[:, :N]
        else:
            labels = torch.randint(self.n_labels, (batch_size, N), generator=g, device=device)
        labels = labels + self.n_items
        k = torch.randint(N, (batch_size,), generator=g, device=device)
        rows = torch.arange(batch_size, device=device)
        seq = torch.stack([items, labels], -1).flatten(1)
        tokens = torch.cat([seq, items[rows, k, None]], 1)
        targets = torch.zeros_like(tokens)
        targets[:, -1] = labels[rows, k]
        mask = torch.zeros_like(tokens, dtype=torch.bool)
        mask[:, -1] = True
        return Batch(tokens, targets, mask, info={"query_pair": k})
