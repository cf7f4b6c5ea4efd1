"""Olsson et al. 2022, "In-context Learning and Induction Heads" (arXiv 2209.11895), on text at
a CPU scale. WORK IN PROGRESS (issue 17): `runs` trains and ships the 1-, 2-, 3-layer and
smeared-key runs (presets `olsson-text-*`), `analysis` measures one run (detect, the
phase-change window, the PCA pivot, pattern-preserving ablation, the before-and-after vector).
`reproduce`, the claims and the shipped assets are not built yet."""

from inducthead.papers.olsson import analysis, runs

__all__ = ["analysis", "runs"]
