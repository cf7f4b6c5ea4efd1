"""Attention patterns as circuitsvis `attention_heads` views (offline, see `viz.html`).

>>> view = viz.attention(model, tokens, layer=1)          # every head of layer 1
>>> view = viz.attention(model, "text", heads=["L1H4"])    # text models: tokenized, labelled
>>> stripes = viz.induction_stripes(model)                 # [BOS] + r + r: the stripe
>>> stripes.patterns[0]                                    # [q, k] of the first head
>>> stripes.stripe_scores                                  # {L1H0: 0.99, ...}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from inducthead.analysis import Head, ModelAdapter, detect, head_label
from inducthead.viz.html import View
from inducthead.viz.inputs import head_patterns, select_heads, token_ids, token_labels

__all__ = ["AttentionView", "attention", "induction_stripes"]


def _head_list(heads: Sequence[Head], limit: int = 8) -> str:
    names = [head_label(h) for h in heads]
    if len(names) <= limit:
        return ", ".join(names)
    return f"{len(names)} heads ({', '.join(names[:3])}, ..., {names[-1]})"


@dataclass(repr=False, eq=False)
class AttentionView(View):
    """Attention patterns of some heads on one sequence.

    `patterns[i]` is head `heads[i]`'s `[query, key]` pattern (float32, CPU); `tokens` the ids and
    `labels` their strings. Views from `induction_stripes` also know the repeated segment
    (`period`, and `start`, the position of its first token) and so their `stripe_scores`.
    """

    patterns: Tensor
    heads: list[Head]
    tokens: Tensor
    labels: list[str]
    model_name: str
    period: int | None = None
    start: int = 0
    note: str = ""  # how the heads were chosen, when not by the caller

    component: ClassVar[str] = "AttentionHeads"

    def pattern(self, head) -> Tensor:
        """`[query, key]` pattern of one head of the view (`(1, 0)` or `"L1H0"`)."""
        head = Head.parse(head) if isinstance(head, str) else Head(*head)
        if head not in self.heads:
            raise KeyError(f"{head_label(head)} is not in this view ({_head_list(self.heads)}).")
        return self.patterns[self.heads.index(head)]

    @property
    def stripe_scores(self) -> dict[Head, float]:
        """Per head, the mean attention that queries in the second repeat pay to the key right
        after the same token's first occurrence (key q - period + 1): 1.0 for a perfect induction
        head, about 1/q for uniform attention. Only views of `induction_stripes` have it."""
        if self.period is None:
            raise ValueError(
                "stripe_scores needs a repeated sequence: use viz.induction_stripes(model)."
            )
        q = torch.arange(self.start + self.period, len(self.tokens))
        stripe = self.patterns[:, q, q - self.period + 1]
        return {h: float(v) for h, v in zip(self.heads, stripe.mean(-1), strict=True)}

    @property
    def title(self) -> str:
        if self.period is None:
            return (
                f"attention of {_head_list(self.heads)} on {len(self.tokens)} tokens "
                f"({self.model_name})"
            )
        bos = "[BOS] + " if self.start else ""
        return (
            f"induction stripes of {_head_list(self.heads)} on {bos}2 x {self.period} random "
            f"tokens ({self.model_name})"
        )

    def props(self) -> dict:
        return {
            # 4 decimals: the tooltips stay readable and the HTML ~3x smaller
            "attention": self.patterns.double().round(decimals=4),
            "tokens": self.labels,
            "attentionHeadNames": [head_label(h) for h in self.heads],
            "maxValue": 1.0,
            "minValue": 0.0,
            "maskUpperTri": True,
        }

    def plot(self, max_cols: int = 4, **kwargs):
        """A static picture of the view (for papers, READMEs and PDFs): one `[query, key]` panel
        per head on the score scale (0..1, the same in every model), the masked future blank;
        views of `induction_stripes` title each head with its stripe score (the stripe itself is
        the diagonal at key = query - period + 1)."""
        from inducthead import plotstyle

        fig, axes = plotstyle.panel_grid(
            len(self.heads), max_cols=max_cols, panel_size=(3.2, 3.0), **kwargs
        )
        scale = plotstyle.colour_scale("score")
        scores = self.stripe_scores if self.period is not None else {}
        n = len(self.tokens)
        for ax, head, pattern in zip(axes, self.heads, self.patterns, strict=True):
            masked = pattern.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("nan"))
            im = ax.imshow(masked, cmap=scale.cmap, vmin=scale.vmin, vmax=scale.vmax)
            name = head_label(head)
            if head in scores:
                name += f"  (stripe {scores[head]:.2f})"
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("key position")
            ax.set_ylabel("query position")
        fig.colorbar(im, ax=axes, shrink=0.8, label="attention")
        stripe = f"; stripe at key = query - {self.period - 1}" if scores else ""
        return plotstyle.finish(fig, self.title + stripe)

    def __repr__(self) -> str:
        if self.period is None:
            text = self.title
        else:
            scores = self.stripe_scores
            shown = ", ".join(f"{head_label(h)} {scores[h]:.2f}" for h in self.heads[:8])
            more = f", ... ({len(self.heads)} heads)" if len(self.heads) > 8 else ""
            bos = "[BOS] + " if self.start else ""
            text = (
                f"induction stripes on {bos}2 x {self.period} random tokens ({self.model_name}); "
                f"stripe score: {shown}{more}"
            )
        return f"AttentionView({text}{'; ' + self.note if self.note else ''})"


def attention(
    model,
    tokens,
    layer: int | Sequence[int] | None = None,
    heads=None,
    labels: Sequence[str] | None = None,
) -> AttentionView:
    """Interactive attention patterns (circuitsvis `attention_heads`) of `model` on `tokens`.

    `model`: an inducthead `HookedTransformer`, a TransformerLens `TransformerBridge` or TL 3
    `HookedTransformer`. `tokens`: one sequence of ids (`[pos]` or `[1, pos]`), or text for a
    model with a tokenizer. `layer`: an int or list of ints (default: every layer); `heads`
    (`(layer, head)` tuples or "L1H4" names) overrides it. `labels`: one string per token
    (default: the tokenizer's strings, else the ids). ValueError for more tokens than n_ctx,
    labels of the wrong length or heads the model does not have.
    """
    adapter = ModelAdapter.wrap(model)
    ids = token_ids(adapter, tokens)
    chosen = select_heads(adapter, layer, heads)
    names = token_labels(adapter, ids, labels)
    return AttentionView(head_patterns(adapter, ids, chosen), chosen, ids, names, adapter.name)


def induction_stripes(
    model, heads=None, seq_len: int | None = None, seed: int = 0
) -> AttentionView:
    """Attention on [BOS] + r + r, r being `seq_len` distinct random tokens (`seed`): an
    induction head draws the off-diagonal stripe at key = query - seq_len + 1 (the token after
    the current token's first occurrence). No BOS for models without one.

    `heads`: default the induction heads `inducthead.detect` finds, else every head of the last
    layer (the view's `note` says which). `seq_len`: default min(25, what fits n_ctx and the
    vocabulary). `.patterns` holds the numbers, `.stripe_scores` the stripe per head.
    """
    adapter = ModelAdapter.wrap(model)
    has_bos = adapter.bos_token_id is not None
    room = min((adapter.n_ctx - has_bos) // 2, adapter.d_vocab - has_bos)
    if seq_len is None:
        seq_len = min(25, room)
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or not 2 <= seq_len <= room:
        raise ValueError(
            f"seq_len must be an int in [2, {room}] for {adapter.name} (two repeats "
            f"{'after BOS ' if has_bos else ''}within n_ctx={adapter.n_ctx}, distinct tokens out "
            f"of d_vocab={adapter.d_vocab}); got {seq_len!r}."
        )
    note = ""
    if heads is None:
        heads = detect(adapter).induction_heads
        note = "heads: detect's induction heads"
        if not heads:
            heads = select_heads(adapter, layer=-1)
            note = "detect found no induction head: every head of the last layer"
    chosen = select_heads(adapter, heads=heads)
    ids = adapter.probe(period=seq_len, repeats=2, n_samples=1, seed=seed)[0].cpu()
    names = token_labels(adapter, ids, None)
    return AttentionView(
        head_patterns(adapter, ids, chosen),
        chosen,
        ids,
        names,
        adapter.name,
        period=seq_len,
        start=int(has_bos),
        note=note,
    )
