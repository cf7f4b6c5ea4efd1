"""The result contract every inducthead result object follows, and per-head tables.

Every result class is named `...Result` (`DetectionResult`, `CausalResult`, `AblationResult`,
`PatchResult`, `SweepResult`, and those of later analyses) and has:

- `repr(result)`: one line with the verdict or the headline numbers;
- `str(result)` / `print(result)`: that line and the text table;
- `to_dataframe()`: one row per head where the result is per head (plain values in every cell);
- `to_dict()` / `from_dict()`, `to_json(path=None)` / `from_json(text_or_path)`: lossless
  round trips (NaN is stored as null, infinities as "inf" / "-inf");
- `plot()`: a matplotlib figure;
- `_repr_html_()`: the Jupyter view.

(The "report" is the self-contained HTML document of a run; result objects are what functions
return.)
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from inducthead.analysis.heads import Head, all_heads, head_label

FLOAT_FORMAT = "{:.3f}".format
_COLORBAR_LABELS = {
    "score": "score (0 to 1)",
    "signed": "score (-1 to 1)",
    "effect": "signed value",
}


def to_jsonable(value: Any) -> Any:
    """Tensors to nested lists, NaN to None, ±inf to "inf"/"-inf", heads to "L1H4", tuples to
    lists (JSON has neither NaN nor infinity)."""
    if isinstance(value, Tensor):
        return to_jsonable(value.tolist())
    if isinstance(value, Head):
        return str(value)
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def from_jsonable(nested) -> Tensor:
    """A `[rows, cols]` float tensor from nested lists as `to_jsonable` wrote them."""
    return torch.tensor([[nan_if_none(v) for v in row] for row in nested])


def nan_if_none(value):
    """A number as `to_jsonable` wrote it: None is NaN, "inf"/"-inf" are infinities."""
    if value is None:
        return math.nan
    if value in ("inf", "-inf"):
        return float(value)
    return value


def source_label(source: dict | None) -> str:
    """ " at step 800" for a result computed on a checkpoint (`ModelAdapter.source`), else ""."""
    return f" at step {source['step']}" if source and source.get("step") is not None else ""


def dump_json(data: dict, path=None) -> str:
    text = json.dumps(to_jsonable(data), indent=2)
    if path is not None:
        Path(path).write_text(text)
    return text


class Result:
    """Base of the result objects (module docstring). Subclasses implement `to_dict`,
    `from_dict`, `to_dataframe`, `plot` and `__repr__`; the rest follows."""

    def to_dict(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, d: dict):
        raise NotImplementedError

    def to_json(self, path=None) -> str:
        """JSON text (NaN as null); written to `path` when given."""
        return dump_json(self.to_dict(), path)

    @classmethod
    def from_json(cls, source: str | Path):
        """From JSON text, or from a file holding it."""
        text = str(source)
        if not text.lstrip().startswith("{"):
            text = Path(source).read_text()
        return cls.from_dict(json.loads(text))

    def to_dataframe(self):
        raise NotImplementedError

    def table(self) -> str:
        """The `to_dataframe()` table as text."""
        df = self.to_dataframe()
        if df.empty:
            return "(empty)"
        return df.to_string(index=False, float_format=FLOAT_FORMAT, na_rep="–")

    def __str__(self) -> str:
        return f"{self!r}\n{self.table()}"

    def _repr_html_(self) -> str:
        df = self.to_dataframe()
        table = df.to_html(index=False, float_format=FLOAT_FORMAT, na_rep="–") if len(df) else ""
        return f"<p><code>{html.escape(repr(self))}</code></p>{table}"

    def plot(self, **kwargs):
        raise NotImplementedError


class HeadTable(Result):
    """Base for results holding `[n_layers, n_heads]` score tensors in `self.scores`: one
    dataframe row per head and layer x head heatmaps."""

    scores: dict[str, Tensor]
    title: str = "scores"
    DEFAULT_KIND = "score"
    KINDS: dict[str, str] = {}  # score name -> colour kind, where it is not DEFAULT_KIND

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(next(iter(self.scores.values())).shape)

    def heads(self) -> list[Head]:
        return all_heads(*self.shape)

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

    @classmethod
    def kind(cls, key: str) -> str:
        """How score `key` is coloured (`plotstyle.colour_scale`): "score" (in [0, 1]), "signed"
        (in [-1, 1]) or "effect" (signed, scaled to the data)."""
        return cls.KINDS.get(key, cls.DEFAULT_KIND)

    def colorbar_label(self, key: str) -> str:
        return _COLORBAR_LABELS[self.kind(key)]

    def outlines(self, key: str) -> dict[str, list[Head]]:
        """Heads to outline on the `key` panel, by what the outline means (legend label)."""
        return {}

    def plot_title(self) -> str:
        return self.title

    def plot(
        self,
        keys: Iterable[str] | None = None,
        highlight: Iterable[Head] | dict[str, Iterable[Head]] | None = None,
        **kwargs,
    ):
        """Layer x head heatmaps, one panel per score, coloured by quantity (`kind`), values in
        the cells of small grids. Outlined: `highlight` heads (a list, or {legend label:
        heads}), by default the result's own (`outlines`). Keywords go to
        `plotstyle.new_figure` (dpi, figsize, ...). The figure is not registered with pyplot:
        Jupyter shows it once; save it with `fig.savefig(path)`."""
        from inducthead import plotstyle

        keys = list(keys or self.scores)
        unknown = [k for k in keys if k not in self.scores]
        if unknown:
            raise ValueError(f"no scores named {unknown}; this result has {list(self.scores)}.")
        n_layers, n_heads = self.shape
        size = (max(3.6, 0.5 * n_heads + 2.4), max(2.8, 0.45 * n_layers + 2.0))
        fig, axes = plotstyle.panel_grid(len(keys), panel_size=size, **kwargs)
        if highlight is not None and not isinstance(highlight, dict):
            heads = list(highlight)
            highlight = {"highlighted: " + ", ".join(head_label(h) for h in heads): heads}
        for ax, key in zip(axes, keys, strict=True):
            kind = self.kind(key)
            plotstyle.head_heatmap(
                ax,
                self.scores[key].numpy(),
                kind,
                highlight=self.outlines(key) if highlight is None else highlight,
                title=key,
                colorbar_label=self.colorbar_label(key),
                legend_below=False,
            )
        plotstyle.figure_legend(fig)
        return plotstyle.finish(fig, self.plot_title())

    def html_table(self, columns: list[str] | None = None, max_rows: int = 40) -> str:
        df = self.to_dataframe()
        if columns:
            df = df[[c for c in columns if c in df]]
        if len(df) > max_rows:
            df = df.head(max_rows)
        return df.to_html(index=False, float_format=FLOAT_FORMAT, na_rep="–")


def html_heads(title: str, heads: list[Head]) -> str:
    names = ", ".join(head_label(h) for h in heads) or "none"
    return f"<b>{html.escape(title)}</b>: {html.escape(names)}"
