"""Curves over a trajectory: the evaluation loss, the ICL score, the loss at each position, the
phase-change window and emergence steps. Mixed into `Trajectory`."""

from __future__ import annotations

import math

import pandas as pd

from inducthead.analysis.emergence import first_crossing
from inducthead.causal.metrics import icl_positions
from inducthead.dynamics import measures, stages
from inducthead.dynamics.results import EmergenceResult, LossByPositionResult, PhaseChangeResult

ICL_DEFINITION = (
    "loss at token index 500 minus loss at index 50, averaged over the evaluation sequences "
    "(Olsson et al. 2022, 'in-context learning score'; inducthead.icl_score), both indices "
    "scaled by (length - 1) / 500 on shorter sequences"
)


class CurvesMixin:
    # ------------------------------------------------------------------ losses and ICL
    def _eval_job(self):
        state: dict = {}

        def fn(adapter):
            if "batch" not in state:
                state["batch"] = self.eval_batch(adapter)
            return measures.eval_outputs(adapter, state["batch"])

        return (self.data_spec(), fn)

    def _eval(self) -> dict[int, dict]:
        return self.compute({"eval": self._eval_job()})["eval"]

    def _curves(self) -> pd.DataFrame:
        by_step = self._eval()
        steps = sorted(by_step)
        tokens, elapsed = self.source.timeline(steps)
        return pd.DataFrame(
            {
                "step": steps,
                "tokens": tokens,
                "elapsed_s": elapsed,
                "loss": [by_step[s]["loss"] for s in steps],
                "icl_score": [by_step[s]["icl_score"] for s in steps],
            }
        )

    def losses(self) -> pd.DataFrame:
        """Loss on the evaluation batch per checkpoint (step, tokens, elapsed_s, loss): for a
        run directory, the `eval_loss` its metrics.jsonl logged at the same steps."""
        return self._curves()[["step", "tokens", "elapsed_s", "loss"]]

    def icl_scores(self) -> pd.DataFrame:
        """ICL score per checkpoint (`inducthead.icl_score`'s definition on the evaluation
        batch): step, tokens, elapsed_s, icl_score."""
        return self._curves()[["step", "tokens", "elapsed_s", "icl_score"]]

    def loss_by_position(self) -> LossByPositionResult:
        """Mean loss at each position per checkpoint (`inducthead.loss_by_position`)."""
        by_step = self._eval()
        rows = [
            (s, p, v) for s in sorted(by_step) for p, v in enumerate(by_step[s]["loss_by_position"])
        ]
        return LossByPositionResult(
            name=self.name, data=pd.DataFrame(rows, columns=["step", "position", "loss"])
        )

    def _window(self) -> dict | None:
        df = self._curves()
        w = stages.steepest_window(df["step"], df["icl_score"], "down", signal="ICL score")
        return w.to_dict() if w else None

    def phase_change(self, fraction: float = 0.5) -> PhaseChangeResult:
        """The phase-change window: where the ICL score falls fastest per unit of ln(1 + step),
        widened over neighbouring intervals falling at >= `fraction` of that rate
        (`stages.steepest_window`; Olsson et al. 2022 locate the phase change by the ICL score's
        abrupt change). The rule is printed with the result."""
        df = self._curves()
        w = stages.steepest_window(df["step"], df["icl_score"], "down", fraction, "ICL score")
        lo, hi = icl_positions(len(self.eval_batch_positions()))
        return PhaseChangeResult(
            name=self.name,
            window=w.to_dict() if w else None,
            rule=w.rule if w else "the ICL score never falls",
            definition=f"{ICL_DEFINITION}; here positions {lo} and {hi}",
            data=df,
        )

    def eval_batch_positions(self) -> range:
        by_step = self._eval()
        return range(len(next(iter(by_step.values()))["loss_by_position"]))

    # ------------------------------------------------------------------ emergence
    def emergence(
        self,
        metric="prefix_matching",
        threshold: float = 0.5,
        by: str | None = None,
        min_layer: int | None = None,
        **probe,
    ) -> EmergenceResult:
        """When `metric` first reached `threshold` (`analysis.emergence.first_crossing`, the
        definition sweeps use): the best head's score (layers >= 1 for prefix matching, which
        needs an earlier layer; `min_layer` overrides), or the minimum of several metrics' best
        heads when `metric` is a list. `by="loss"`: when the evaluation loss fell past the
        midpoint of its plateau (median loss up to the start of its fastest fall) and its final
        value. Step interpolated between checkpoints, with tokens and training seconds."""
        if by not in (None, "loss"):
            raise ValueError(f"by must be None or 'loss', got {by!r}.")
        if by == "loss":
            df = self._curves()
            w = stages.steepest_window(df["step"], df["loss"], "down", signal="loss")
            plateau = float(df["loss"][df["step"] <= (w.start if w else df["step"].max())].median())
            final = float(df["loss"].iloc[-1])
            threshold = (plateau + final) / 2
            steps, values, direction = list(df["step"]), list(df["loss"]), "down"
            name = "loss"
            definition = (
                f"first checkpoint whose evaluation loss is <= the midpoint {threshold:.3f} of "
                f"its plateau {plateau:.3f} (median up to the start of its fastest fall) and "
                f"its final value {final:.3f}, interpolated linearly from the checkpoint "
                "before it"
            )
        else:
            names = [metric] if isinstance(metric, str) else list(metric)
            scores = self.head_scores(names, **probe)
            series, heads = None, []
            for m in names:
                layer = min_layer if min_layer is not None else (1 if m == "prefix_matching" else 0)
                best = scores.best(m, min_layer=layer)
                series = best if series is None else series.combine(best, min)
                heads.append(f"{m} over heads of layers >= {layer}")
            steps, values = list(series.index), list(series.values)
            direction, name = "up", "+".join(names)
            definition = (
                f"first checkpoint where the best {' and the best '.join(heads)} "
                f"{'are' if len(names) > 1 else 'is'} >= {threshold:g}, interpolated linearly from "
                "the checkpoint before it"
            )
        c = first_crossing(steps, values, threshold, direction)
        tokens = elapsed = math.nan
        if c is not None:
            t, e = self.source.timeline([c.step])
            tokens, elapsed = float(t[0]), float(e[0])
        return EmergenceResult(
            name=self.name,
            metric=name,
            threshold=threshold,
            by=by or "head_scores",
            step=c.step if c else None,
            before=c.before if c else None,
            after=c.after if c else None,
            tokens=tokens,
            elapsed_s=elapsed,
            definition=definition,
            data=pd.DataFrame({"step": steps, "value": values}),
        )
