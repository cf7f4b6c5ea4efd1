"""Results of trajectory analyses, following the result contract (`inducthead.analysis.results`):
one-line `repr`, `print` = repr + table, `to_dataframe()`, `to_dict`/`from_dict`,
`to_json`/`from_json`, `plot()`, `_repr_html_()`.

`TrajectoryResult` stores plain fields and pandas tables and round-trips both; each subclass names
its fields and tables, writes its one line and draws its picture. This module holds the curve
results (head scores, phase change, loss by position, emergence, stages); the PCA, LLC and
progress-measure results are in `dynamics.results_pca`.
"""

from __future__ import annotations

import math

from inducthead.analysis.detection import DetectionResult
from inducthead.analysis.results import FLOAT_FORMAT, Result
from inducthead.dynamics import plots

# y limits of detect's scores over training, by their colour kind (the same in every model).
_SCORE_LIMITS = {"score": (-0.03, 1.03), "signed": (-1.05, 1.05)}


def _num(x, fmt: str = ".3g") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


class TrajectoryResult(Result):
    """Base: `FIELDS` are JSON values, `TABLES` pandas DataFrames; the first table is
    `to_dataframe()`."""

    FIELDS: tuple[str, ...] = ()
    TABLES: tuple[str, ...] = ("data",)

    def __init__(self, **values):
        import pandas as pd

        for name in self.FIELDS:
            setattr(self, name, values.get(name))
        for name in self.TABLES:
            table = values.get(name)
            setattr(self, name, table if table is not None else pd.DataFrame())

    def to_dataframe(self):
        return getattr(self, self.TABLES[0]).copy()

    def to_dict(self) -> dict:
        out = {"result": type(self).__name__}
        out.update({name: getattr(self, name) for name in self.FIELDS})
        out["tables"] = {name: getattr(self, name).to_dict("list") for name in self.TABLES}
        return out

    @classmethod
    def from_dict(cls, d: dict):
        import pandas as pd

        tables = {name: pd.DataFrame(d.get("tables", {}).get(name, {})) for name in cls.TABLES}
        for table in tables.values():
            for col in table.columns:
                if table[col].dtype == object and all(
                    v is None or isinstance(v, (int, float)) for v in table[col]
                ):
                    table[col] = table[col].astype(float)
        return cls(**{name: d.get(name) for name in cls.FIELDS}, **tables)

    def _steps(self) -> list[int]:
        df = getattr(self, self.TABLES[0])
        return sorted({int(s) for s in df["step"]}) if "step" in df else []

    def _span(self) -> str:
        steps = self._steps()
        return f"{len(steps)} checkpoints {steps[0]}-{steps[-1]}" if steps else "no checkpoints"


class HeadScoresResult(TrajectoryResult):
    """Per-head scores over training: `to_dataframe()` is tidy, one row per (step, layer, head,
    metric) with `label` ("L1H4"), `tokens` and `elapsed_s`; `wide(metric)` is step x head."""

    FIELDS = ("name", "metrics", "probe", "window", "notes")

    def wide(self, metric: str | None = None):
        metric = metric or self.metrics[0]
        df = self.data[self.data["metric"] == metric]
        return df.pivot_table(index="step", columns="label", values="value", sort=False)

    def best(self, metric: str | None = None, min_layer: int = 0):
        """The best head's value per step (heads of layers >= `min_layer`)."""
        metric = metric or self.metrics[0]
        df = self.data[(self.data["metric"] == metric) & (self.data["layer"] >= min_layer)]
        return df.groupby("step")["value"].max()

    def __repr__(self) -> str:
        df = self.data
        if df.empty:
            return f"HeadScoresResult({self.name!r}, no checkpoints)"
        metric = self.metrics[0]
        last = df[(df["metric"] == metric) & (df["step"] == df["step"].max())]
        top = last.loc[last["value"].idxmax()]
        first = df[
            (df["metric"] == metric)
            & (df["step"] == df["step"].min())
            & (df["label"] == top["label"])
        ]
        shape = f"{df['layer'].max() + 1}L x {df['head'].max() + 1}H"
        window = (
            f"; phase change steps {self.window['start']}-{self.window['end']}"
            if self.window
            else ""
        )
        return (
            f"HeadScoresResult({self.name!r}, {self._span()}, {shape}, {len(self.metrics)} "
            f"metrics; top {metric}: {top['label']} {float(first['value'].iloc[0]):.2f} -> "
            f"{float(top['value']):.2f}{window})"
        )

    def table_text(self) -> str:
        parts = []
        for metric in self.metrics[:3]:
            parts.append(f"{metric}:\n" + self.wide(metric).to_string(float_format=FLOAT_FORMAT))
        if len(self.metrics) > 3:
            parts.append(f"(+ {len(self.metrics) - 3} more metrics in to_dataframe())")
        return "\n".join(parts)

    def table(self) -> str:
        return self.table_text() if not self.data.empty else "(empty)"

    def plot(self, metrics=None, **kwargs):
        """One panel per metric (the first four by default): a line per head, one colour per
        head across panels, the phase-change window shaded, log-like step axis."""
        from inducthead import plotstyle

        metrics = list(metrics or self.metrics[: min(len(self.metrics), 4)])
        fig, axes = plotstyle.panel_grid(len(metrics), **kwargs)
        labels = list(dict.fromkeys(self.data.sort_values(["layer", "head"])["label"]))
        colours = plotstyle.head_colours(labels)
        for ax, metric in zip(axes, metrics, strict=True):
            wide = self.wide(metric)
            for label in labels:
                if label in wide:
                    ax.plot(wide.index, wide[label], marker=".", color=colours[label], label=label)
            plots.shade(ax, self.window)
            plotstyle.step_axis(ax, list(wide.index))
            limits = _SCORE_LIMITS.get(DetectionResult.kind(metric))
            if limits:
                ax.set_ylim(*limits)
            ax.set_title(metric, fontsize=10)
            ax.set_ylabel("score")
        plotstyle.figure_legend(fig, ncol=min(len(labels) + 1, 8))
        return plotstyle.finish(fig, f"{self.name}: head scores")


class PhaseChangeResult(TrajectoryResult):
    """The phase-change window from the ICL score's derivative (rule in `rule`), with the loss
    and ICL curves (`to_dataframe()`: step, tokens, elapsed_s, loss, icl_score)."""

    FIELDS = ("name", "window", "rule", "definition")

    def __repr__(self) -> str:
        if not self.window:
            return (
                f"PhaseChangeResult({self.name!r}, {self._span()}: none, the ICL score never falls)"
            )
        w = self.window
        return (
            f"PhaseChangeResult({self.name!r}: steps {w['start']}-{w['end']}, fastest ICL fall "
            f"{w['peak_start']}-{w['peak_end']} ({w['peak_rate']:+.3g} nats per e-fold of steps))"
        )

    def __str__(self) -> str:
        rule = f"rule: {self.rule}\nICL score: {self.definition}"
        return f"{self!r}\n{rule}\n{self.table()}"

    def plot(self, **kwargs):
        """Loss (left axis) and ICL score (right axis) against step, the window shaded."""
        from inducthead import plotstyle

        fig, (ax,) = plotstyle.panel_grid(1, **kwargs)
        df = self.data
        ax.plot(df["step"], df["loss"], marker=".", color="C0", label="loss")
        ax.set_ylabel("loss (nats)", color="C0")
        twin = ax.twinx()
        twin.plot(df["step"], df["icl_score"], marker=".", color="C3", label="ICL score")
        twin.set_ylabel("ICL score (nats)", color="C3")
        plots.shade(ax, self.window)
        plotstyle.step_axis(ax, list(df["step"]))
        plotstyle.figure_legend(fig)
        return plotstyle.finish(fig, f"{self.name}: loss and ICL score")


class LossByPositionResult(TrajectoryResult):
    """Mean loss at each token position per checkpoint (`inducthead.loss_by_position`'s
    definition); `to_dataframe()` is tidy (step, position, loss), `wide()` step x position."""

    FIELDS = ("name",)

    def wide(self):
        return self.data.pivot_table(index="step", columns="position", values="loss")

    def __repr__(self) -> str:
        if self.data.empty:
            return f"LossByPositionResult({self.name!r}, no checkpoints)"
        w = self.wide()
        last = w.iloc[-1]
        return (
            f"LossByPositionResult({self.name!r}, {self._span()} x {w.shape[1]} positions; at "
            f"step {w.index[-1]}: {last.iloc[0]:.2f} at position 0 -> {last.iloc[-1]:.2f} at "
            f"{w.columns[-1]})"
        )

    def table(self) -> str:
        w = self.wide()
        cols = w.columns[:: max(1, len(w.columns) // 8)]
        return w[cols].to_string(float_format=FLOAT_FORMAT)

    def plot(self, **kwargs):
        """Loss against position (log), one curve per checkpoint coloured by step."""
        from matplotlib.cm import ScalarMappable

        from inducthead import plotstyle

        fig, (ax,) = plotstyle.panel_grid(1, **kwargs)
        w = self.wide()
        norm = plotstyle.step_norm(list(w.index))
        mappable = ScalarMappable(norm=norm, cmap=plotstyle.STEP_CMAP)
        for step, row in w.iterrows():
            ax.plot(row.index, row.values, color=mappable.to_rgba(step), lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("token position")
        ax.set_ylabel("loss (nats)")
        fig.colorbar(mappable, ax=ax, label="training step")
        return plotstyle.finish(fig, f"{self.name}: loss by position")


class EmergenceResult(TrajectoryResult):
    """When a score first crossed its threshold (`inducthead.analysis.emergence.first_crossing`,
    the one definition sweeps use too): `step` interpolated linearly between the checkpoints
    `before` and `after`, with `tokens` and training `elapsed_s` at that step;
    `to_dataframe()` is the series crossed."""

    FIELDS = (
        "name",
        "metric",
        "threshold",
        "by",
        "step",
        "before",
        "after",
        "tokens",
        "elapsed_s",
        "definition",
    )

    def __repr__(self) -> str:
        if self.step is None:
            return (
                f"EmergenceResult({self.name!r}: {self.metric} never reaches {self.threshold:.3g})"
            )
        where = (
            f"between checkpoints {self.before} and {self.after}"
            if self.before is not None
            else "at the first checkpoint"
        )
        return (
            f"EmergenceResult({self.name!r}: {self.metric} reaches {self.threshold:.3g} at step "
            f"{self.step:.0f} ({where}; {_num(self.tokens, ',.0f')} tokens, "
            f"{_num(self.elapsed_s, '.1f')} s))"
        )

    def __str__(self) -> str:
        return f"{self!r}\ndefinition: {self.definition}\n{self.table()}"

    def plot(self, **kwargs):
        """The series, its threshold and the interpolated crossing step."""
        from inducthead import plotstyle

        fig, (ax,) = plotstyle.panel_grid(1, **kwargs)
        df = self.data
        ax.plot(df["step"], df["value"], marker=".", label=self.metric)
        ax.axhline(
            self.threshold, color="0.5", ls="--", lw=1, label=f"threshold {self.threshold:g}"
        )
        if self.step is not None:
            ax.axvline(self.step, color="C3", lw=1, label=f"emergence (step {self.step:.0f})")
        plotstyle.step_axis(ax, list(df["step"]))
        ax.set_ylabel(self.metric)
        plotstyle.legend(ax)
        return plotstyle.finish(fig, f"{self.name}: emergence of {self.metric}")


class StagesResult(TrajectoryResult):
    """Stage signals side by side: one row per signal with its window (or point) in steps and
    its definition; `agree` says whether all fall in or next to (one checkpoint) the
    phase-change window."""

    FIELDS = ("name", "reference", "agree")

    def __repr__(self) -> str:
        ref = self.reference
        where = f"steps {ref['start']}-{ref['end']}" if ref else "no phase change"
        verdict = "all in or next to it" if self.agree else "not all in or next to it"
        n = len(self.data)
        return f"StagesResult({self.name!r}: {n} signals; phase change {where}, {verdict})"

    def plot(self, **kwargs):
        """Each signal's window (bar) and step (tick) on one step axis, the reference window
        shaded."""
        from inducthead import plotstyle

        fig, (ax,) = plotstyle.panel_grid(1, **kwargs)
        df = self.data
        for i, row in enumerate(df.itertuples()):
            first = i == 0  # one legend entry per mark
            window = "signal's window" if first else "_nolegend_"
            ax.plot(
                [row.start, row.end], [i, i], color="C0", lw=6, solid_capstyle="butt", label=window
            )
            ax.plot([row.step], [i], "k|", ms=12, label="signal's step" if first else "_nolegend_")
        ax.set_yticks(range(len(df)))
        ax.set_yticklabels(df["signal"])
        plots.shade(ax, self.reference)
        plotstyle.step_axis(ax, sorted(set(df["start"]) | set(df["end"])))
        plotstyle.legend(ax)
        return plotstyle.finish(fig, f"{self.name}: stage signals")
