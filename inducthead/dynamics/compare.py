"""`Trajectory.compare([...])`: several runs analysed together (the same examples for all)."""

from __future__ import annotations

import pandas as pd

from inducthead.dynamics.spaces import compare_pca


class Comparison:
    """Several trajectories side by side.

    >>> cmp = Trajectory.compare(["runs/a", "runs/b"])
    >>> cmp.per_token_loss_pca()   # one PCA over every checkpoint of every run
    >>> cmp.emergence()            # one row per run
    """

    def __init__(self, trajectories):
        if not trajectories:
            raise ValueError("compare needs at least one trajectory.")
        self.trajectories = list(trajectories)

    def __repr__(self) -> str:
        return f"Comparison({', '.join(repr(t.name) for t in self.trajectories)})"

    def per_token_loss_pca(self, n_examples: int = 512, seed: int = 0, n_components: int = 10):
        """Olsson et al. 2022's per-token-loss PCA jointly over all runs: the same examples and
        token positions at every checkpoint of every run."""
        return compare_pca(self.trajectories, n_examples, seed, n_components)

    def emergence(self, metric="prefix_matching", threshold: float = 0.5, by=None) -> pd.DataFrame:
        """One row per run: its emergence step, tokens and seconds."""
        rows = []
        for t in self.trajectories:
            e = t.emergence(metric, threshold, by=by)
            rows.append(
                {
                    "run": t.name,
                    "step": e.step,
                    "before": e.before,
                    "after": e.after,
                    "tokens": e.tokens,
                    "elapsed_s": e.elapsed_s,
                }
            )
        return pd.DataFrame(rows)
