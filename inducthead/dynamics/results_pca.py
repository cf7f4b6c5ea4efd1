"""Results of the PCA, LLC and progress-measure analyses of a trajectory (the result contract,
as in `dynamics.results`)."""

from __future__ import annotations

import math

import numpy as np

from inducthead.dynamics import plots
from inducthead.dynamics.results import TrajectoryResult, _num


def _ratios(evr, k: int = 3) -> str:
    return ", ".join(f"PC{i + 1} {r:.2f}" for i, r in enumerate((evr or [])[:k]))


class PCAResult(TrajectoryResult):
    """PCA of per-token losses across checkpoints (Olsson et al. 2022), jointly over one or
    several runs: `to_dataframe()` has one row per (run, step) with its coordinates pc1..pcK;
    `explained_variance_ratio` per component."""

    FIELDS = ("name", "what", "runs", "explained_variance_ratio", "n_examples", "seed", "notes")

    def coords(self, run: str | None = None) -> np.ndarray:
        df = self.data if run is None else self.data[self.data["run"] == run]
        cols = [c for c in df.columns if c.startswith("pc")]
        return df[cols].to_numpy(dtype=float)

    def __repr__(self) -> str:
        n = len(self.data)
        runs = len(self.runs or [])
        return (
            f"{type(self).__name__}({self.what}, {runs} run{'s' if runs != 1 else ''} x "
            f"{n // max(runs, 1)} checkpoints, {self.n_examples} examples: "
            f"{_ratios(self.explained_variance_ratio)})"
        )

    def plot(self, **kwargs):
        """PC1 x PC2 trajectories (points coloured by step, one marker per run) and the
        explained variance ratios."""
        from inducthead import plotstyle

        fig, (ax, bar) = plotstyle.panel_grid(2, **kwargs)
        markers = "osD^vP*X"
        norm = plotstyle.step_norm(list(self.data["step"]))
        sc = None
        for i, run in enumerate(self.runs or []):
            df = self.data[self.data["run"] == run]
            xy = (
                df[["pc1", "pc2"]].to_numpy(dtype=float)
                if "pc2" in df
                else np.c_[df["pc1"], 0 * df["pc1"]]
            )
            sc = plots.trajectory(ax, xy, list(df["step"]), run, markers[i % len(markers)], norm)
        evr = self.explained_variance_ratio or []
        ax.set_xlabel(f"PC1 ({evr[0]:.0%})" if evr else "PC1")
        ax.set_ylabel(f"PC2 ({evr[1]:.0%})" if len(evr) > 1 else "PC2")
        if sc is not None:
            fig.colorbar(sc, ax=ax, label="training step")
        if len(self.runs or []) > 1:
            plotstyle.legend(ax, fontsize=7)
        bar.bar(range(1, len(evr[:10]) + 1), evr[:10])
        bar.set_xticks(range(1, len(evr[:10]) + 1))
        bar.set_xlabel("component")
        bar.set_ylabel("explained variance ratio")
        bar.set_ylim(0, 1)
        return plotstyle.finish(fig, f"{self.name}: {self.what}")


class EssentialDynamicsResult(PCAResult):
    """Essential dynamics (Hoogland et al. 2024): PCA of the model's outputs on a fixed probe
    set across checkpoints, smoothed (`sigma` checkpoints), with turning points (local extrema
    of the smoothed PC coordinates, prominence >= `min_prominence` of the component's range) as
    candidate stage boundaries; `turn` is the most prominent one. `signals` (a table) reports the
    other stage signals next to it."""

    FIELDS = PCAResult.FIELDS + ("output", "sigma", "min_prominence", "turning_points", "turn")
    TABLES = ("data", "signals")

    def __repr__(self) -> str:
        turn = f"; turn at step {self.turn}" if self.turn is not None else "; no turning point"
        return super().__repr__()[:-1] + turn + ")"

    def __str__(self) -> str:
        tps = (
            ", ".join(
                f"{t['step']} (PC{t['component']} {t['kind']}, {t['prominence']:.2f})"
                for t in self.turning_points or []
            )
            or "none"
        )
        text = f"{self!r}\nturning points: {tps}\n{self.table()}"
        if not self.signals.empty:
            text += "\nstage signals:\n" + self.signals.to_string(index=False)
        return text

    def plot(self, **kwargs):
        fig = super().plot(**kwargs)
        ax = fig.axes[0]
        df = self.data
        from inducthead import plotstyle

        for i, t in enumerate(self.turning_points or []):
            row = df[df["step"] == t["step"]].iloc[0]
            ax.scatter(
                [row["pc1"]],
                [row.get("pc2", 0.0)],
                s=120,
                facecolors="none",
                edgecolors="C3",
                label="turning point" if i == 0 else "_nolegend_",
            )
        plotstyle.legend(ax, fontsize=7)
        return fig


class WeightPCAResult(TrajectoryResult):
    """PCA of the flattened parameters across checkpoints (exact, from the Gram matrix), the
    participation ratio (sum l)^2 / sum l^2, the span dimension of the updates at `tol`, and one
    row per parameter group in `groups` (share of the variance, its own PC1 ratio,
    participation ratio and span dimension). `to_dataframe()`: step, pc1..pcK."""

    FIELDS = (
        "name",
        "params",
        "n_params",
        "explained_variance_ratio",
        "participation_ratio",
        "span_dimension",
        "tol",
        "singular_values",
    )
    TABLES = ("data", "groups")

    def __repr__(self) -> str:
        return (
            f"WeightPCAResult({self.name!r}, {self._span()}, {self.n_params:,} parameters: "
            f"{_ratios(self.explained_variance_ratio)}; participation ratio "
            f"{self.participation_ratio:.2f}, span dimension {self.span_dimension} at tol "
            f"{self.tol:g})"
        )

    def __str__(self) -> str:
        return f"{self!r}\n{self.table()}\nparameter groups:\n{self.groups.to_string(index=False)}"

    def plot(self, **kwargs):
        """PC1 x PC2 of the parameters, the singular spectrum of the updates, and each parameter
        group's share of the variance."""
        from inducthead import plotstyle

        fig, (ax, spec, groups) = plotstyle.panel_grid(3, **kwargs)
        xy = self.data[[c for c in ("pc1", "pc2") if c in self.data]].to_numpy(dtype=float)
        if xy.shape[1] == 1:
            xy = np.c_[xy, np.zeros(len(xy))]
        sc = plots.trajectory(ax, xy, list(self.data["step"]))
        fig.colorbar(sc, ax=ax, label="training step")
        evr = self.explained_variance_ratio
        ax.set_xlabel(f"PC1 ({evr[0]:.0%})")
        ax.set_ylabel(f"PC2 ({evr[1]:.0%})" if len(evr) > 1 else "PC2")
        sv = np.asarray(self.singular_values, dtype=float)
        spec.semilogy(range(1, len(sv) + 1), sv / sv[0] if len(sv) and sv[0] else sv, marker=".")
        spec.axhline(self.tol, color="0.5", ls="--", lw=1, label=f"tol {self.tol:g}")
        plotstyle.legend(spec)
        spec.set_xlabel("direction of the updates")
        spec.set_ylabel("singular value / largest")
        g = self.groups
        groups.barh(g["group"], g["variance_share"])
        groups.set_xlabel("share of the weight variance")
        return plotstyle.finish(fig, f"{self.name}: weight trajectory")


class LLCResult(TrajectoryResult):
    """Local learning coefficient per checkpoint (Lau et al. 2023's SGLD estimator, through
    devinterp): `to_dataframe()` one row per checkpoint (llc_mean, llc_std over chains,
    init_loss, chains that stayed finite, warnings); `traces` the SGLD loss traces (step,
    chain, sgld_step, loss); `settings` the sampler settings; `boundaries` the critical points
    of the LLC curve (d LLC / d log t changes sign, Hoogland et al. 2024) and `window` its
    steepest change."""

    FIELDS = ("name", "settings", "boundaries", "window", "seconds_per_checkpoint")
    TABLES = ("data", "traces")

    def __repr__(self) -> str:
        df = self.data
        if df.empty:
            return f"LLCResult({self.name!r}, no checkpoints)"
        w = self.window
        change = f"; fastest change steps {w['start']}-{w['end']}" if w else ""
        s = self.settings or {}
        return (
            f"LLCResult({self.name!r}, {self._span()}: LLC {_num(df['llc_mean'].iloc[0])} -> "
            f"{_num(df['llc_mean'].iloc[-1])}{change}; lr {s.get('lr')}, n_beta "
            f"{_num(s.get('n_beta'))}, {s.get('num_chains')} chains x {s.get('num_draws')} draws)"
        )

    def __str__(self) -> str:
        s = ", ".join(f"{k}={v}" for k, v in (self.settings or {}).items())
        return f"{self!r}\nsettings: {s}\nboundaries: {self.boundaries}\n{self.table()}"

    def plot(self, **kwargs):
        """LLC (mean ± std over chains) against step, with its critical points and steepest
        change; the SGLD loss traces coloured by checkpoint step."""
        from matplotlib.cm import ScalarMappable

        from inducthead import plotstyle

        fig, (ax, tr) = plotstyle.panel_grid(2, **kwargs)
        df = self.data
        ax.errorbar(
            df["step"],
            df["llc_mean"],
            yerr=df["llc_std"],
            marker=".",
            capsize=2,
            label="LLC (mean ± std over chains)",
        )
        for i, b in enumerate(self.boundaries or []):
            label = "critical point" if i == 0 else "_nolegend_"
            ax.axvline(b, color="0.5", ls=":", lw=1, label=label)
        plots.shade(ax, self.window, "fastest LLC change")
        plotstyle.step_axis(ax, list(df["step"]))
        ax.set_ylabel("LLC")
        plotstyle.legend(ax, fontsize=7)
        traces = self.traces
        if not traces.empty:
            steps = sorted(set(traces["step"]))
            mappable = ScalarMappable(plotstyle.step_norm(steps), plotstyle.STEP_CMAP)
            for (step, _chain), t in traces.groupby(["step", "chain"]):
                tr.plot(t["sgld_step"], t["loss"], color=mappable.to_rgba(step), lw=0.7)
            fig.colorbar(mappable, ax=tr, label="checkpoint step")
            tr.set_xlabel("SGLD step")
            tr.set_ylabel("loss")
            tr.set_title("SGLD loss traces", fontsize=9)
        else:
            tr.axis("off")
        return plotstyle.finish(fig, f"{self.name}: local learning coefficient")


class ProgressMeasuresResult(TrajectoryResult):
    """Musat et al. 2025's progress measures per checkpoint and head (PROVISIONAL definitions,
    see `dynamics.measures.progress_measures`): tidy (step, measure, layer, head, label,
    value)."""

    FIELDS = ("name", "notes", "definition")

    def __repr__(self) -> str:
        df = self.data
        if df.empty:
            return f"ProgressMeasuresResult({self.name!r}, no checkpoints)"
        last = df[df["step"] == df["step"].max()]
        parts = []
        for m in ("alpha", "beta", "gamma"):
            v = last[last["measure"] == m]["value"]
            parts.append(f"{m} {_num(float(v.max()) if len(v) and v.notna().any() else math.nan)}")
        return (
            f"ProgressMeasuresResult({self.name!r}, {self._span()}; at the end (best head): "
            f"{', '.join(parts)})"
        )

    def table(self) -> str:
        wide = self.data.pivot_table(index="step", columns=["measure", "label"], values="value")
        return wide.to_string(float_format=lambda x: f"{x:.3g}")

    def plot(self, **kwargs):
        """alpha, beta and gamma per head against step (one colour per head across panels)."""
        from inducthead import plotstyle

        fig, axes = plotstyle.panel_grid(3, **kwargs)
        labels = list(dict.fromkeys(self.data.sort_values(["layer", "head"])["label"]))
        colours = plotstyle.head_colours(labels)
        for ax, m in zip(axes, ("alpha", "beta", "gamma"), strict=True):
            df = self.data[self.data["measure"] == m]
            for label, d in df.groupby("label"):
                ax.plot(d["step"], d["value"], marker=".", color=colours[label], label=label)
            plotstyle.step_axis(ax, sorted(set(self.data["step"])))
            ax.set_title(m, fontsize=10)
        plotstyle.figure_legend(fig, ncol=min(len(labels), 8))
        return plotstyle.finish(fig, f"{self.name}: progress measures (provisional)")
