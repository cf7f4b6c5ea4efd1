"""Olsson et al. 2022, "In-context Learning and Induction Heads" (arXiv 2209.11895), on text at
a CPU scale: `reproduce(mode)` measures the 1-, 2-, 3-layer and smeared-key attention-only runs
(presets `olsson-text-*`): induction heads found by `detect`, the phase-change window with the
prefix-matching jump and the loss bump, the joint per-token-loss PCA pivot, pattern-preserving
ablation and the before-and-after attribution. `runs` trains and ships the runs
(`assets/olsson/`), `analysis` measures one, `pca` is the joint PCA, `claims` judges them."""

from inducthead.papers.olsson import analysis, claims, pca, runs
from inducthead.papers.olsson.experiment import MODES, OlssonResult, reproduce

__all__ = ["MODES", "OlssonResult", "analysis", "claims", "pca", "reproduce", "runs"]
