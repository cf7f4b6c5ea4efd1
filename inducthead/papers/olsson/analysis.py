"""One run's analysis, Olsson et al. 2022's arguments on our trajectory: induction heads found by
`detect`, the phase-change window (the ICL score's steepest fall, `Trajectory.phase_change`), the
prefix-matching jump and the loss gap to the 1-layer run beside it (Argument 1), pattern-
preserving ablation of the induction heads (Argument 3) and the attribution of each head to the
"before-and-after vector" (Model Analysis Table). The per-token-loss PCA is joint over runs
(`papers.olsson.pca`).

Definitions (PROVISIONAL where marked: ours, not read in the paper's text):
- ICL score: the loss at token index 500 minus index 50 (Key Concepts), here indices 255 and 26
  of 256 (`causal.metrics.icl_positions`), each averaged over a band of `BAND` positions (the
  last 11; 21-31) (PROVISIONAL: measured on 256 held-out windows, the single-index score swings
  by +-0.2 nats between neighbouring checkpoints of the 1-layer run, the band score by +-0.05).
- window: `dynamics.stages.steepest_window` of that score (the rule `Trajectory.phase_change`
  uses, on the band score).
- prefix-matching jump: the first step where the best head's prefix matching (layers >= 1;
  every layer for smeared keys, whose layer-0 heads can match prefixes) reaches detect's 0.3.
- loss bump: the paper's bump is "the first point where the loss curve diverges from a one-layer
  model"; here the steepest fall (same rule) of this run's evaluation loss minus the 1-layer
  run's at each step.
- before-and-after vector: the paper's is the per-token losses at the phase change's end minus
  its start, normalised, and a head's attribution is the dot product of its ablation's change of
  the per-token losses with it (negative for induction heads). Ours (PROVISIONAL) reads the same
  projection as a fraction: with d = losses at the window's start minus its end, a head's
  attribution is <L_ablated - L, d> / <d, d> at the window's end, the share of the phase
  change's per-token improvement that pattern-preserving ablation of the head undoes (the
  paper's value is -ours x |d|). On the first `ATTRIBUTION_WINDOWS` evaluation windows, every
  position (the paper: 10,000 tokens, one per sequence).
"""

from __future__ import annotations

import contextlib
import math

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
# A phase change is an ICL fall of more than MARGIN nats across the window (from its start to
# its end): the paper's "less than 0.15 nats before", and 3x the noise of the band score (the
# 1-layer run stays within +-0.05 of 0 over its 2000 steps). Runs without one get no
# attribution (there is no phase change to attribute).
MARGIN = 0.15
BAND = 11  # positions averaged at each ICL index (module docstring)
ATTRIBUTION_WINDOWS = 64  # windows behind the per-head attribution (4-12 ablations per run)


def token_losses(model, batch: Batch, heads=(), chunk: int = 16) -> torch.Tensor:
    """`[batch, pos]` cross-entropy of `model` on `batch`, with `heads` ablated
    (pattern-preserving) when given. Small chunks and the model's SDPA path when nothing is
    ablated (`fast_attention`; the same function). Measured on 256 windows, one core shared
    with another job: chunks of 16 instead of 128 2.1x faster on the 2-layer run, the SDPA
    path 1.4-1.6x more (2L, smeared 1L)."""
    out = []
    fast = getattr(model, "fast_attention", None)
    with torch.no_grad(), fast() if callable(fast) else contextlib.nullcontext():
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


def icl(losses) -> float:
    """The band ICL score of per-token losses `[batch, pos]`."""
    return float(band_icl(np.asarray(losses).mean(0)))


def checkpoint_losses(traj: Trajectory, batch: Batch) -> tuple[list[int], np.ndarray]:
    """The steps and `[checkpoints, batch, pos]` per-token losses (float32) of every readable
    checkpoint of `traj` (a damaged one is skipped with a warning, `Trajectory.models`)."""
    steps, out = [], []
    for ref, model in traj.models():
        steps.append(int(ref.step))
        out.append(token_losses(model, batch).numpy())
    return steps, np.stack(out)


def analyse(
    traj: Trajectory,
    batch: Batch,
    steps: list[int],
    losses: np.ndarray,
    baseline_loss: dict | None = None,
) -> dict:
    """Every per-run measurement of the module docstring for the shipped run `traj`
    (`runs.ship`: log-spaced checkpoints; on evenly spaced late checkpoints the sampling noise
    is the steepest fall per ln(step)), from its `checkpoint_losses` (`steps`, `losses`) on the
    evaluation `batch`; `baseline_loss` `{step: loss}` is the 1-layer run's (loss gap)."""
    mean_loss = losses.mean(axis=(1, 2))
    icl_curve = band_icl(losses.mean(1))
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
        "loss": [round(float(v), 4) for v in mean_loss],
        "icl_score": [round(float(v), 4) for v in icl_curve],
        "best_prefix_matching": [round(float(best_pm.get(s, math.nan)), 4) for s in steps],
        "induction_heads": [head_label(h) for h in heads],
        "previous_token_heads": [head_label(h) for h in found.previous_token_heads],
        "prefix_matching_jump_step": jump.step if jump else math.nan,
        "window": window.to_dict() if window else None,
    }
    if baseline_loss is not None:
        common = [s for s in steps if s in baseline_loss]
        gap = [mean_loss[steps.index(s)] - baseline_loss[s] for s in common]
        w = steepest_window(common, gap, "down", signal="loss gap to the 1-layer run")
        m["loss_gap"] = [round(float(g), 4) for g in gap]
        m["loss_gap_window"] = w.to_dict() if w else None
    if window is None:
        return m
    i0, i1 = steps.index(window.start), steps.index(window.end)
    m["window_tokens"] = [float(t) for t in traj.source.timeline([window.start, window.end])[0]]
    # before: at the window's start; across: at its end; after: at the end of training
    m["icl_score_before"], m["icl_score_after"] = m["icl_score"][i0], m["icl_score"][-1]
    m["icl_score_window_end"] = m["icl_score"][i1]
    m["icl_final"] = float(icl_curve[-1])
    if heads:
        m.update(_ablations(final, batch, heads, m["icl_final"]))
    if m["icl_score_before"] - m["icl_score_window_end"] > MARGIN:
        after = final if i1 == len(steps) - 1 else traj.load(window.end)
        m["attribution"] = _attribution(after, batch, losses[i0], losses[i1])
        # the heads detect finds in that snapshot (smeared 2L: layer 0 does induction at the
        # window's end, layer 1 takes over later)
        at_end = detect(after)
        m["attribution_heads"] = {
            "step": window.end,
            "induction": [head_label(h) for h in at_end.induction_heads],
            "previous_token": [head_label(h) for h in at_end.previous_token_heads],
        }
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


def _attribution(model, batch: Batch, before: np.ndarray, after: np.ndarray) -> dict[str, float]:
    """Each head's share of the before-and-after vector (module docstring): `before` and `after`
    are the per-token losses at the window's start and end, `model` the checkpoint at its end."""
    n = ATTRIBUTION_WINDOWS
    small = Batch(batch.tokens[:n], batch.targets[:n], batch.mask[:n])
    base = torch.from_numpy(after[:n]).flatten()
    d = torch.from_numpy(before[:n]).flatten() - base
    out = {}
    for layer in range(model.cfg.n_layers):
        for h in range(model.cfg.n_heads):
            delta = token_losses(model, small, [(layer, h)]).flatten() - base
            out[head_label((layer, h))] = round(float(delta @ d / (d @ d)), 4)
    return out
