"""One run's analysis, Olsson et al. 2022's arguments on our trajectory: induction heads found by
`detect`, the phase-change window (the ICL score's steepest fall, `Trajectory.phase_change`), the
prefix-matching jump and the loss gap to the 1-layer run inside it, the per-token-loss PCA
pivot, pattern-preserving ablation of the induction heads, and the "before-and-after vector"
attribution per head.

Definitions (PROVISIONAL where marked: ours, not read in the paper's text):
- ICL score: Olsson's loss at token index 500 minus index 50, here indices 255 and 26 of 256
  (`causal.metrics.icl_positions`), each averaged over a band of `BAND` positions (the last 11;
  21-31) (PROVISIONAL: measured on 256 held-out windows, the single-index score swings by
  +-0.2 nats between neighbouring checkpoints of the 1-layer run, the band score by +-0.05).
- window: `dynamics.stages.steepest_window` of that score (the rule `Trajectory.phase_change`
  uses, on the band score).
- prefix-matching jump: the first step where the best head's prefix matching (layers >= 1;
  every layer for smeared keys, whose layer-0 heads can match prefixes) reaches detect's 0.3.
- loss gap (PROVISIONAL): this run's evaluation loss minus the 1-layer run's at each step; the
  "bump" is its steepest fall (the 1-layer model forms no induction head, so the gap opens
  where this model's does; Olsson's Fig. "loss curves diverge at the phase change").
- PCA pivot (PROVISIONAL): the checkpoint farthest from the chord joining the first and the last
  point of the trajectory in the (PC1, PC2) plane of `Trajectory.per_token_loss_pca`.
- before-and-after vector (Olsson's Argument 4; the projection is PROVISIONAL): d = per-token
  losses at the window's start minus at its end, over the evaluation tokens; a head's attribution
  is <L_ablated - L, d> / <d, d> at the window's end: the fraction of the phase change's
  per-token loss improvement that pattern-preserving ablation of that head undoes.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from inducthead.analysis.detect import detect
from inducthead.analysis.emergence import first_crossing
from inducthead.analysis.heads import head_label
from inducthead.causal.ablation import ablate
from inducthead.causal.metrics import icl_positions
from inducthead.dynamics import Trajectory
from inducthead.dynamics.stages import steepest_window
from inducthead.tasks import Batch

HEAD_EMERGES = 0.3  # detect's prefix-matching threshold
BAND = 11  # positions averaged at each ICL index (module docstring)
ATTRIBUTION_WINDOWS = 128  # evaluation windows behind the per-head attribution (8-12 ablations)


def token_losses(model, batch: Batch, heads=(), chunk: int = 128) -> torch.Tensor:
    """`[batch, pos]` cross-entropy of `model` on `batch`, with `heads` ablated
    (pattern-preserving) when given."""
    out = []
    with torch.no_grad():
        for i in range(0, len(batch), chunk):
            tokens = batch.tokens[i : i + chunk].to(model.cfg.device)
            with ablate(model, heads, "pattern_preserving") if heads else contextlib.nullcontext():
                logits = model(tokens)
            targets = batch.targets[i : i + chunk].to(logits.device)
            out.append(F.cross_entropy(logits.transpose(1, 2).float(), targets, reduction="none"))
    return torch.cat(out).cpu()


def band_icl(by_position) -> np.ndarray:
    """The band ICL score (module docstring) of mean losses by position `[..., pos]`."""
    by_position = np.asarray(by_position, dtype=float)
    lo, hi = icl_positions(by_position.shape[-1])
    half = BAND // 2
    early = by_position[..., max(lo - half, 0) : lo + half + 1].mean(-1)
    return by_position[..., max(hi - BAND + 1, 0) : hi + 1].mean(-1) - early


def icl(losses: torch.Tensor) -> float:
    """The band ICL score of per-token losses `[batch, pos]`."""
    return float(band_icl(losses.mean(0).numpy()))


def pivot_step(coords: np.ndarray, steps: list[int]) -> int:
    """The checkpoint farthest from the chord between the first and last (PC1, PC2) points."""
    xy = coords[:, :2]
    a, b = xy[0], xy[-1]
    chord = b - a
    n = np.linalg.norm(chord)
    if n == 0:
        return int(steps[int(np.argmax(np.linalg.norm(xy - a, axis=1)))])
    dist = np.abs(chord[0] * (xy[:, 1] - a[1]) - chord[1] * (xy[:, 0] - a[0])) / n
    return int(steps[int(np.argmax(dist))])


def analyse(where: Path, batch: Batch, baseline_loss: dict | None = None, progress=False) -> dict:
    """Every measurement of one shipped run directory (`runs.ship`: log-spaced checkpoints;
    on evenly spaced late checkpoints the sampling noise is the steepest fall per ln(step)) on
    the evaluation `batch`; `baseline_loss` `{step: loss}` is the 1-layer run's (loss gap)."""
    traj = Trajectory(where, data=batch, cache=False, progress=progress)
    df = traj.losses()
    steps = [int(s) for s in df["step"]]
    by_pos = traj.loss_by_position().data.pivot(index="step", columns="position", values="loss")
    icl_curve = band_icl(by_pos.loc[steps].to_numpy())
    window = steepest_window(steps, icl_curve, "down", signal="band ICL score")
    final = traj.load(steps[-1])
    scores = traj.head_scores(("prefix_matching",), phase_change=False).data
    min_layer = 0 if final.cfg.smear_keys else 1
    best_pm = scores[scores["layer"] >= min_layer].groupby("step")["value"].max()
    jump = first_crossing(list(best_pm.index), list(best_pm.values), HEAD_EMERGES, "up")
    found = detect(final)
    heads = [tuple(h) for h in found.induction_heads]
    m: dict = {
        "steps": steps,
        "loss": [round(float(v), 4) for v in df["loss"]],
        "icl_score": [round(float(v), 4) for v in icl_curve],
        "best_prefix_matching": [round(float(best_pm.get(s, math.nan)), 4) for s in steps],
        "induction_heads": [head_label(h) for h in heads],
        "previous_token_heads": [head_label(h) for h in found.previous_token_heads],
        "prefix_matching_jump_step": jump.step if jump else math.nan,
        "window": window.to_dict() if window else None,
        "icl_rule": window.rule if window else "the band ICL score never falls",
    }
    if baseline_loss is not None:
        common = [s for s in steps if s in baseline_loss]
        gap = [df["loss"][steps.index(s)] - baseline_loss[s] for s in common]
        w = steepest_window(common, gap, "down", signal="loss gap to the 1-layer run")
        m["loss_gap"] = [round(float(g), 4) for g in gap]
        m["loss_gap_window"] = w.to_dict() if w else None
    pca = traj.per_token_loss_pca(n_examples=len(batch))
    coords = pca.coords()
    m["pca"] = {
        "pc1": coords[:, 0].round(4).tolist(),
        "pc2": coords[:, 1].round(4).tolist(),
        "explained_variance_ratio": [round(float(r), 4) for r in pca.explained_variance_ratio[:3]],
        "pivot_step": pivot_step(coords, steps),
    }
    w = m["window"]
    if w is None:
        return m
    i0, i1 = steps.index(w["start"]), steps.index(w["end"])
    m["icl_score_before"], m["icl_score_after"] = m["icl_score"][i0], m["icl_score"][-1]
    m["icl_final"] = float(icl_curve[-1])  # the last checkpoint's losses on the same batch
    if heads:
        m.update(_ablations(final, batch, heads, m["icl_final"]))
    m["attribution"] = _attribution(traj, steps[i0], steps[i1], batch)
    return m


def _ablations(final, batch: Batch, heads: list, icl_full: float) -> dict:
    """ICL score with the induction heads ablated (pattern-preserving), and with as many other
    heads of the same layers (the control: removing any heads is not enough); `icl_full` is the
    unablated model's."""
    ablated = icl(token_losses(final, batch, heads))
    layers = {layer for layer, _ in heads}
    others = [
        (layer, h)
        for layer in sorted(layers)
        for h in range(final.cfg.n_heads)
        if (layer, h) not in heads
    ][: len(heads)]
    out = {
        "icl_ablated": ablated,
        "icl_removed_by_ablation": 1 - ablated / icl_full if icl_full < 0 else math.nan,
    }
    if others:
        control = icl(token_losses(final, batch, others))
        out["control_heads"] = [head_label(h) for h in others]
        out["icl_removed_by_control"] = 1 - control / icl_full if icl_full < 0 else math.nan
    return out


def _attribution(traj, before: int, after: int, batch: Batch) -> dict[str, float]:
    """Each head's share of the before-and-after vector (module docstring)."""
    small = Batch(
        batch.tokens[:ATTRIBUTION_WINDOWS],
        batch.targets[:ATTRIBUTION_WINDOWS],
        batch.mask[:ATTRIBUTION_WINDOWS],
    )
    model_before, model_after = traj.load(before), traj.load(after)
    base = token_losses(model_after, small)
    d = (token_losses(model_before, small) - base).flatten()
    out = {}
    for layer in range(model_after.cfg.n_layers):
        for h in range(model_after.cfg.n_heads):
            delta = (token_losses(model_after, small, [(layer, h)]) - base).flatten()
            out[head_label((layer, h))] = round(float(delta @ d / (d @ d)), 4)
    return out
