"""Plumbing shared by result objects: per-head tables, heatmaps, JSON."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from inducthead.analysis.heads import Head, head_label


def to_jsonable(value: Any) -> Any:
    """Tensors to nested lists, NaN/inf to None, tuples to lists (JSON has no NaN)."""
    if isinstance(value, Tensor):
        return to_jsonable(value.tolist())
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def from_jsonable(nested) -> Tensor:
    return torch.tensor([[math.nan if v is None else v for v in row] for row in nested])


class HeadTable:
    """Base for results holding `[n_layers, n_heads]` score tensors in `self.scores`."""

    scores: dict[str, Tensor]
    title: str = "scores"

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(next(iter(self.scores.values())).shape)

    def heads(self) -> list[Head]:
        n_layers, n_heads = self.shape
        return [(l, h) for l in range(n_layers) for h in range(n_heads)]

    def extra_columns(self) -> dict[str, list]:
        """Subclasses add per-head columns (e.g. a verdict)."""
        return {}

    def to_dataframe(self):
        """One row per head: layer, head, label, every score (and subclass columns)."""
        import pandas as pd

        heads = self.heads()
        data: dict[str, list] = {
            "layer": [l for l, _ in heads],
            "head": [h for _, h in heads],
            "label": [head_label(x) for x in heads],
        }
        for name, values in self.scores.items():
            data[name] = [float(values[l, h]) for l, h in heads]
        data.update(self.extra_columns())
        return pd.DataFrame(data)

    def plot(self, keys: Iterable[str] | None = None, highlight: Iterable[Head] = (), **kwargs):
        """Layer × head heatmaps, one panel per score; `highlight` heads are outlined."""
        import matplotlib.pyplot as plt

        keys = list(keys or self.scores)
        n_layers, n_heads = self.shape
        cols = min(3, len(keys))
        rows = math.ceil(len(keys) / cols)
        width = max(3.2, 0.45 * n_heads + 1.6)
        fig, axes = plt.subplots(
            rows,
            cols,
            figsize=(width * cols, (0.4 * n_layers + 1.4) * rows),
            squeeze=False,
            **kwargs,
        )
        for ax, key in zip(axes.flat, keys, strict=False):
            values = self.scores[key].numpy()
            finite = values[~(values != values)]
            lo = min(0.0, float(finite.min())) if finite.size else 0.0
            hi = max(1.0, float(finite.max())) if finite.size else 1.0
            cmap = "RdBu_r" if lo < 0 else "viridis"
            bound = max(abs(lo), abs(hi))
            im = ax.imshow(
                values,
                cmap=cmap,
                vmin=-bound if lo < 0 else lo,
                vmax=bound if lo < 0 else hi,
                aspect="auto",
            )
            for l, h in highlight:
                ax.add_patch(plt.Rectangle((h - 0.5, l - 0.5), 1, 1, fill=False, ec="red", lw=2))
            ax.set_title(key, fontsize=10)
            ax.set_xlabel("head")
            ax.set_ylabel("layer")
            ax.set_xticks(range(n_heads))
            ax.set_yticks(range(n_layers))
            fig.colorbar(im, ax=ax, shrink=0.8)
        for ax in list(axes.flat)[len(keys) :]:
            ax.axis("off")
        fig.suptitle(self.title)
        fig.tight_layout()
        return fig

    def html_table(self, columns: list[str] | None = None, max_rows: int = 40) -> str:
        df = self.to_dataframe()
        if columns:
            df = df[[c for c in columns if c in df]]
        if len(df) > max_rows:
            df = df.head(max_rows)
        return df.to_html(index=False, float_format=lambda x: f"{x:.3f}", na_rep="–")


def html_heads(title: str, heads: list[Head]) -> str:
    names = ", ".join(head_label(h) for h in heads) or "none"
    return f"<b>{html.escape(title)}</b>: {html.escape(names)}"


def dump_json(data: dict, path=None) -> str:
    text = json.dumps(to_jsonable(data), indent=2)
    if path is not None:
        from pathlib import Path

        Path(path).write_text(text)
    return text
