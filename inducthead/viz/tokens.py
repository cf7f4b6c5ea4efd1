"""Which tokens some heads help predict: the per-token loss change when they are ablated, as a
circuitsvis `colored_tokens` view (offline, see `viz.html`). The ablation is
`inducthead.causal.ablate`'s (zero, mean or pattern-preserving).

>>> view = viz.loss_change_tokens(model, text, ["L1H4", "L1H6"])
>>> view.values                  # [pos]: ablated minus clean loss of predicting each token
>>> view.to_dataframe().nlargest(5, "change")
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import pandas as pd
import torch
from torch import Tensor

from inducthead.analysis import Head, ModelAdapter, check_heads, head_label
from inducthead.causal import ablate
from inducthead.model import token_nll
from inducthead.viz.html import View
from inducthead.viz.inputs import token_ids, token_labels

__all__ = ["LossChangeView", "loss_change_tokens"]


@dataclass(repr=False, eq=False)
class LossChangeView(View):
    """Per-token loss with some heads ablated minus without, on one sequence.

    `values[i]` is the change in the loss (nats) of predicting token i from tokens[:i]: positive
    where the heads help. `clean[i]`, `ablated[i]` are the two losses. Position 0 has no
    prediction: NaN in all three (drawn as 0). Blue tokens: the heads help predict them (the
    loss rises without them); red: the loss falls.
    """

    values: Tensor
    clean: Tensor
    ablated: Tensor
    tokens: Tensor
    labels: list[str]
    heads: list[Head]
    mode: str
    reference: str | None
    model_name: str
    spaced: bool = False  # ids as labels: drawn with a space between them

    component: ClassVar[str] = "ColoredTokens"

    @property
    def title(self) -> str:
        names = ", ".join(head_label(h) for h in self.heads)
        mode = self.mode.replace("_", "-")
        return (
            f"loss change when {mode}-ablating {names} on {len(self.tokens)} tokens "
            f"({self.model_name})"
        )

    def props(self) -> dict:
        shown = torch.nan_to_num(self.values, nan=0.0).double().round(decimals=4)
        scale = max(float(shown.abs().max()), 1e-6)  # symmetric, so 0 is white
        labels = [f"{s} " for s in self.labels] if self.spaced else self.labels
        return {"tokens": labels, "values": shown, "minValue": -scale, "maxValue": scale}

    def to_dataframe(self) -> pd.DataFrame:
        """One row per token: position, id, label, clean and ablated loss, change."""
        return pd.DataFrame(
            {
                "position": range(len(self.tokens)),
                "token": self.tokens.tolist(),
                "label": self.labels,
                "clean": self.clean.tolist(),
                "ablated": self.ablated.tolist(),
                "change": self.values.tolist(),
            }
        )

    def __repr__(self) -> str:
        v = self.values[1:]
        top = int(v.argmax()) + 1
        ref = f", reference {self.reference}" if self.reference else ""
        return (
            f"LossChangeView({self.title}{ref}; mean change {float(v.mean()):+.3f} nats, largest "
            f"{float(v.max()):+.3f} at token {top} {self.labels[top]!r})"
        )


def loss_change_tokens(
    model,
    tokens,
    heads,
    ablation: str = "mean",
    reference=None,
    labels: Sequence[str] | None = None,
) -> LossChangeView:
    """Colour each token of `tokens` by how much the loss of predicting it rises when `heads`
    are ablated: which tokens the heads help predict.

    `tokens`: one sequence of ids, or text for a model with a tokenizer. `ablation`: "zero",
    "mean" or "pattern_preserving" (`inducthead.causal.ablate`). Mean ablation's `reference`
    (token ids `[batch, pos]`, a Batch or a Task) defaults to `tokens` themselves: each head's
    output averaged over this text's positions (the causal default, random repeated tokens, is
    far from a text model's data). `labels` as in `viz.attention`.
    """
    adapter = ModelAdapter.wrap(model)
    ids = token_ids(adapter, tokens)
    if len(ids) < 2:
        raise ValueError(f"need at least 2 tokens to have a prediction to score, got {len(ids)}.")
    chosen = check_heads(heads, adapter)
    names = token_labels(adapter, ids, labels)
    batch = ids[None].to(adapter.device)
    if ablation == "mean" and reference is None:
        reference = batch
    abl = ablate(adapter, chosen, mode=ablation, reference=reference)
    pad = torch.full((1,), math.nan)
    losses = []
    for hooks in ([], abl.hooks_for(batch)):
        nll = token_nll(adapter.logits(batch, hooks)[0, :-1], batch[0, 1:])
        losses.append(torch.cat([pad, nll.cpu()]))
    clean, ablated = losses
    spaced = labels is None and getattr(adapter.model, "tokenizer", None) is None
    return LossChangeView(
        ablated - clean,
        clean,
        ablated,
        ids,
        names,
        chosen,
        ablation,
        abl.reference,
        adapter.name,
        spaced,
    )
