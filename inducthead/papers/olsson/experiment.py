"""`reproduce(mode)`: Olsson et al. 2022 on text at a CPU scale, as an `OlssonResult`.

- quick (< 3 min on 2 CPU cores): analyses the runs shipped in `assets/olsson/` (`runs.ASSETS`:
  the 1-, 2-, 3-layer and smeared-key runs, weights-only checkpoints at `runs.KEEP`, trained by
  the full recipe with `make assets`) on their shipped held-out windows.
- full: trains those runs (presets `olsson-text-*`, seed 0: ~45 CPU-minutes on one core, or a
  GPU), ships them into `out_dir/runs` the same way and analyses that copy, so the two modes
  differ only in where the runs come from.

Every run is measured by `analysis.analyse` (1L first: it is the loss-bump baseline); the
per-token-loss PCA is fitted jointly over all runs (`pca`).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from inducthead.dynamics import Trajectory
from inducthead.papers.common import ReproductionResult
from inducthead.papers.olsson import analysis, claims, pca
from inducthead.papers.olsson import runs as shipped

MODES = ("quick", "full")
FULL = {"steps": None}  # None: the presets' recipe (2000 steps); tests shorten it


class OlssonResult(ReproductionResult):
    """`reproduce("quick" | "full")`'s result (`papers.common.ReproductionResult`)."""

    def plot(self, **kwargs):
        from inducthead.papers.olsson.plots import figure

        return figure(self, **kwargs)


def reproduce(
    mode: str = "quick",
    out_dir=None,
    device=None,
    seeds=(0,),
    progress: bool = True,
    runs=None,
    work_dir=None,
) -> OlssonResult:
    """Run the reproduction; with `out_dir`, write metrics.json and figure.png there (full mode
    also ships its runs into `out_dir/runs`). `runs` picks keys of `runs.RUNS` (default all; the
    1-layer run is always included: the loss bump is measured against it); `work_dir` keeps
    full mode's complete training runs (default: a temporary folder)."""
    if mode not in MODES:
        raise ValueError(f"mode must be 'quick' or 'full', got {mode!r}.")
    seeds = list(seeds) if seeds else [0]
    if seeds != [0]:
        raise ValueError(
            f"the Olsson runs are seed 0 (the presets' and the shipped assets'); got seeds {seeds}."
        )
    keys = list(dict.fromkeys(["1l", *(runs or shipped.RUNS)]))
    unknown = [k for k in keys if k not in shipped.RUNS]
    if unknown:
        raise ValueError(f"unknown run(s) {unknown}; choose from {', '.join(shipped.RUNS)}.")
    start = time.perf_counter()
    if mode == "quick":
        if device not in (None, "cpu"):
            raise ValueError("quick mode analyses small shipped models on the CPU (device=None).")
        return _analyse(shipped.ASSETS, keys, mode, out_dir, start, progress)
    if out_dir is None:
        raise ValueError("full mode writes its shipped runs to out_dir: pass out_dir.")
    where = Path(out_dir) / "runs"
    shipped.build_assets(where, work_dir, progress, keys, FULL["steps"], device)
    return _analyse(where, keys, mode, out_dir, start, progress)


def _analyse(where: Path, keys, mode, out_dir, start, progress) -> OlssonResult:
    batch = shipped.eval_batch(where)
    missing = [k for k in keys if not (Path(where) / k / "run.json").is_file()]
    if missing:
        raise FileNotFoundError(
            f"{where} has no run(s) {missing}: rebuild the assets with `make assets`, or run "
            "reproduce(mode='full', out_dir=...)."
        )
    per_run, losses, baseline = {}, {}, None
    for key in keys:
        traj = Trajectory(Path(where) / key, data=batch, cache=False, progress=progress)
        steps, tl = analysis.checkpoint_losses(traj, batch)
        per_run[key] = analysis.analyse(traj, batch, steps, tl, baseline)
        losses[key] = tl
        if key == "1l":
            baseline = dict(zip(steps, tl.mean(axis=(1, 2)).tolist(), strict=True))
    joint = pca.joint_pca(losses)
    for key, coords in joint["coords"].items():
        r = per_run[key]
        r["pca"] = {"pc1": coords[:, 0].round(3).tolist(), "pc2": coords[:, 1].round(3).tolist()}
        r["pca_pivot"] = pca.pivot(r["steps"], coords[:, 1])
    m = _metrics(per_run, joint["explained_variance_ratio"], mode)
    ours, status = claims.judge(m)
    m["wall_s"] = time.perf_counter() - start
    curves = {
        k: {c: r[c] for c in ("steps", "loss", "icl_score", "best_prefix_matching", "pca")}
        for k, r in per_run.items()
    }
    result = OlssonResult("olsson2022", mode, m, claims.PAPER, ours, status, curves, m["wall_s"])
    if out_dir is not None:
        result.write(out_dir)
    return result


def _metrics(per_run: dict, evr, mode: str) -> dict:
    """The headline keys (per run) next to every run's full measurements (`runs`)."""
    curve_keys = ("loss", "icl_score", "best_prefix_matching", "pca")
    m: dict = {"mode": mode}
    for key, r in per_run.items():
        m[f"induction_heads_{key}"] = r["induction_heads"]
    m["phase_change_window"] = {
        k: [r["window"]["start"], r["window"]["end"]] if r["window"] else None
        for k, r in per_run.items()
    }
    for name in ("icl_score_before", "icl_score_after", "icl_removed_by_ablation"):
        m[name] = {k: r[name] for k, r in per_run.items() if name in r}
    m["pca_explained_variance_ratio"] = [round(float(v), 4) for v in np.asarray(evr)[:3]]
    m["runs"] = {k: {c: v for c, v in r.items() if c not in curve_keys} for k, r in per_run.items()}
    return m
