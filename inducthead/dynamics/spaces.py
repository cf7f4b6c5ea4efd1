"""The trajectory in weight space and function space: weight PCA, Olsson's per-token-loss PCA
(one run or several compared), Hoogland's essential dynamics, the LLC, and the stage signals
side by side. Mixed into `Trajectory`."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from inducthead.dynamics import measures, pca, stages
from inducthead.dynamics.results import StagesResult
from inducthead.dynamics.results_pca import EssentialDynamicsResult, PCAResult, WeightPCAResult
from inducthead.dynamics.sources import FileSource
from inducthead.runs import CheckpointError

ED_MIN_PROMINENCE = 0.05  # see essential_dynamics


def _examples_job(traj, n_examples: int, seed: int, output: str, data=None):
    """The cached job computing each checkpoint's outputs at the examples' fixed positions."""
    state: dict = {}

    def examples(adapter):
        if "batch" not in state:
            batch = data if data is not None else traj.example_batch(adapter, n_examples, seed)
            state["batch"], state["pos"] = batch, measures.example_positions(batch, seed)
        return measures.example_outputs(adapter, state["batch"], state["pos"], output)

    spec = {"examples": n_examples, "seed": seed, "output": output, **traj.data_spec()}
    if data is not None:
        spec["examples_data"] = measures.batch_fingerprint(data)
    return {f"examples_{output}_{n_examples}_{seed}": (spec, examples)}


class SpacesMixin:
    # ------------------------------------------------------------------ examples
    def example_batch(self, adapter, n_examples: int, seed: int):
        """The `n_examples` sequences behind the per-token-loss vectors: drawn from the run's
        training distribution (`task.sample`), else default repeated-token data; seeded."""
        from inducthead.causal.data import repeated_token_batch

        if self._data is not None:
            return self.eval_batch()
        if self.source.task is not None:
            return self.source.task.sample(n_examples, seed=7919 + seed, device="cpu")
        shape = self._shape() or adapter
        return repeated_token_batch(shape, n_samples=n_examples, seed=7919 + seed)

    def _example_rows(self, n_examples: int, seed: int, output: str, data=None) -> dict:
        job = _examples_job(self, n_examples, seed, output, data)
        return next(iter(self.compute(job).values()))

    # ------------------------------------------------------------------ per-token losses
    def per_token_loss_pca(self, n_examples: int = 512, seed: int = 0, n_components: int = 10):
        """Olsson et al. 2022's per-token-loss PCA: each of `n_examples` sequences contributes
        its loss at one random token index (fixed by `seed`, the same at every checkpoint), so
        each checkpoint is a vector of n_examples losses; PCA over the checkpoints."""
        return compare_pca([self], n_examples, seed, n_components)

    # ------------------------------------------------------------------ essential dynamics
    def essential_dynamics(
        self,
        output: str = "loss",
        n_examples: int = 256,
        seed: int = 0,
        n_components: int = 3,
        sigma: float | None = None,
        min_prominence: float = ED_MIN_PROMINENCE,
        llc: bool = False,
    ):
        """Essential dynamics (Hoogland et al. 2024, section 4): PCA of the model's outputs on a
        fixed probe set across checkpoints, per-token losses (`output="loss"`) or centred logits
        ("logits") at one fixed position of each of `n_examples` sequences; the projected
        trajectory is smoothed (Gaussian over checkpoints, `sigma`; default none below 50
        checkpoints, where it only blurs the few there are, else 1% of the checkpoints) and its
        turning points (local extrema of each of the top `n_components` coordinates, prominence
        >= `min_prominence` of the largest coordinate's range) are candidate stage boundaries.
        The other stage signals are reported next to them (`signals`; the LLC with `llc=True`)."""
        rows = self._example_rows(n_examples, seed, output)
        steps = sorted(rows)
        X = np.array([rows[s]["values"] for s in steps])
        evr, coords, _ = pca.data_pca(X, n_components)
        sigma = (0.0 if len(steps) < 50 else len(steps) / 100) if sigma is None else sigma
        smoothed = stages.smooth(coords, sigma)
        tps = stages.turning_points(steps, smoothed, min_prominence)
        data = pd.DataFrame({"run": self.name, "step": steps})
        for k in range(smoothed.shape[1]):
            data[f"pc{k + 1}"] = smoothed[:, k]
        turn = tps[0]["step"] if tps else None
        result = EssentialDynamicsResult(
            name=self.name,
            what=f"essential dynamics ({output})",
            runs=[self.name],
            explained_variance_ratio=evr.tolist(),
            n_examples=n_examples,
            seed=seed,
            notes=[],
            output=output,
            sigma=sigma,
            min_prominence=min_prominence,
            turning_points=tps,
            turn=turn,
            data=data,
        )
        result.signals = self.stages(llc=llc, essential=result).data
        return result

    # ------------------------------------------------------------------ weights
    def weight_pca(self, params=None, tol: float = 1e-3, n_components: int = 10) -> WeightPCAResult:
        """PCA of the flattened parameters across checkpoints, streamed (exact Gram-matrix PCA,
        `dynamics.pca`): explained variance ratio, participation ratio, span dimension of the
        updates at `tol`, and a per-parameter-group breakdown. `params`: parameter names or glob
        patterns (default all), e.g. "blocks.1.attn.*"."""
        refs = self.refs
        if isinstance(self.source, FileSource):
            if self.verify:  # hash-check each file once (streamed) before reading slices of it
                good = []
                for ref, model in self.models(refs):
                    good.append(ref)
                    del model
                refs = good
            grams = pca.weight_grams([r.path for r in refs], params)
        else:
            loaded = []

            def models():
                for ref, model in self.models(refs):
                    loaded.append(ref)
                    yield model

            grams = pca.spooled_grams(models(), len(refs), params)
            refs = loaded
        if len(refs) < 2:
            raise ValueError("weight PCA needs at least 2 intact checkpoints.")
        total = sum(G for G, _ in grams.values())
        summary = pca.summarise(total, tol, n_components)
        group_rows = []
        all_var = summary["total_variance"] or math.nan
        for group, (G, n) in sorted(grams.items()):
            s = pca.summarise(G, tol, 1)
            group_rows.append(
                {
                    "group": group,
                    "n_params": n,
                    "variance_share": s["total_variance"] / all_var,
                    "pc1_ratio": (s["explained_variance_ratio"] or [math.nan])[0],
                    "participation_ratio": s["participation_ratio"],
                    "span_dimension": s["span_dimension"],
                }
            )
        proj = np.array(summary["projections"])
        data = pd.DataFrame({"step": [r.step for r in refs]})
        for k in range(proj.shape[1]):
            data[f"pc{k + 1}"] = proj[:, k]
        return WeightPCAResult(
            name=self.name,
            params=params,
            n_params=int(sum(n for _, n in grams.values())),
            explained_variance_ratio=summary["explained_variance_ratio"],
            participation_ratio=summary["participation_ratio"],
            span_dimension=summary["span_dimension"],
            tol=tol,
            singular_values=summary["singular_values"],
            data=data,
            groups=pd.DataFrame(group_rows),
        )

    # ------------------------------------------------------------------ LLC
    def llc(self, settings=None, heads=None, **overrides):
        """Local learning coefficient per checkpoint (`dynamics.llc`; needs
        `pip install 'inducthead[devinterp]'`). `settings`: an `LLCSettings` (keyword overrides
        accepted); `heads`: restrict SGLD to these heads' weights (per-head LLC)."""
        from inducthead.dynamics.llc import trajectory_llc

        return trajectory_llc(self, settings, heads, **overrides)

    # ------------------------------------------------------------------ stages
    def stages(self, llc: bool = False, essential=None, **llc_settings) -> StagesResult:
        """Every stage signal side by side: the phase change (ICL score), the prefix-matching
        rise and its emergence, the loss drop and its emergence, the essential-dynamics turn and,
        with `llc=True`, the LLC's fastest change and critical points. `agree`: all fall in or
        within one checkpoint of the phase-change window."""
        steps = self.steps
        df = self._curves()
        ref = stages.steepest_window(df["step"], df["icl_score"], "down", signal="ICL score")
        rows = []

        def add(signal, window, point, definition):
            if window is None and point is None:
                rows.append((signal, None, None, None, definition))
                return
            start = window.start if window else int(point)
            end = window.end if window else int(point)
            rows.append(
                (signal, start, end, point if point is not None else window.peak_end, definition)
            )

        add("ICL score (phase change)", ref, None, ref.rule if ref else "never falls")
        best = self.head_scores(["prefix_matching"]).best("prefix_matching", min_layer=1)
        w = stages.steepest_window(
            list(best.index), list(best.values), "up", signal="best prefix matching"
        )
        em = self.emergence("prefix_matching", 0.5)
        add(
            "prefix matching (best head, layers >= 1)",
            w,
            em.step,
            f"{w.rule if w else 'never rises'}; point: {em.definition}",
        )
        w = stages.steepest_window(df["step"], df["loss"], "down", signal="loss")
        em = self.emergence(by="loss")
        add("loss", w, em.step, f"{w.rule if w else 'never falls'}; point: {em.definition}")
        ed = essential if essential is not None else self.essential_dynamics()
        add(ed.what, None, ed.turn, "most prominent turning point of the smoothed PC coordinates")
        if llc:
            res = self.llc(**llc_settings)
            lw = res.window
            win = stages.Window(**lw) if lw else None
            add(
                "LLC",
                win,
                None,
                (lw or {}).get("rule", "constant") + f"; critical points {res.boundaries}",
            )
        table = pd.DataFrame(rows, columns=["signal", "start", "end", "step", "definition"])
        agree = ref is not None and all(
            r.start is not None and _near(ref, r.start, r.end, steps) for r in table.itertuples()
        )
        return StagesResult(
            name=self.name, reference=ref.to_dict() if ref else None, agree=bool(agree), data=table
        )


def _near(window, start, end, steps, slack: int = 1) -> bool:
    """Whether [start, end] overlaps the window widened by `slack` checkpoints each side."""
    i, j = steps.index(window.start), steps.index(window.end)
    lo, hi = steps[max(0, i - slack)], steps[min(len(steps) - 1, j + slack)]
    return start <= hi and end >= lo


def compare_pca(
    trajectories, n_examples: int = 512, seed: int = 0, n_components: int = 10
) -> PCAResult:
    """Per-token-loss PCA jointly over several runs: the same examples (drawn once, from the
    first run's distribution) and positions at every checkpoint of every run, one PCA over all
    of them. `Trajectory.compare([...])` calls this."""
    first = trajectories[0]
    data = None
    if len(trajectories) > 1:  # the same sequences for every run
        ref = next(iter(first.refs))
        adapter = None
        if first._shape() is None:
            from inducthead.analysis import ModelAdapter

            adapter = ModelAdapter.wrap(first.source.load(ref, first.verify))
        data = first.example_batch(adapter, n_examples, seed)
    blocks, names, all_steps = [], [], []
    for t in trajectories:
        try:
            rows = t._example_rows(n_examples, seed, "loss", data)
        except CheckpointError:
            raise
        steps = sorted(rows)
        blocks.append(np.array([rows[s]["values"] for s in steps]))
        names += [t.name] * len(steps)
        all_steps += steps
    evr, coords, _ = pca.data_pca(np.concatenate(blocks), n_components)
    df = pd.DataFrame({"run": names, "step": all_steps})
    for k in range(coords.shape[1]):
        df[f"pc{k + 1}"] = coords[:, k]
    runs = list(dict.fromkeys(names))
    if len(runs) < len(trajectories):
        raise ValueError("compare needs runs with distinct names (their directory names).")
    return PCAResult(
        name=" vs ".join(runs) if len(runs) > 1 else runs[0],
        what="per-token losses",
        runs=runs,
        explained_variance_ratio=evr.tolist(),
        n_examples=n_examples,
        seed=seed,
        notes=[],
        data=df,
    )
