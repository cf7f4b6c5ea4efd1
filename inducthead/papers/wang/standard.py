"""The standard-transformer check (the issue's, not the paper's): our `HookedTransformer`
(preset `wang-standard`) trained with cross-entropy and AdamW on the token version of the
mixed target (`inducthead.tasks.MixedTargetICL`), its loss split into the two parts at every
checkpoint, `ih.detect` at the end and detect's prefix-matching score over the checkpoints.

The split is the cross-entropy against each part's own target minus that part's floor (-log
alpha*, -log(1 - alpha*): the mixture's weights on the two tokens), as a fraction of its value
at step 0: e_4 and e_IH, the token analogues of the six-scalar model's relative errors.
Thresholds (PROVISIONAL, ours; measured on seed 0): the 4-gram part is learned when e_4 <= 0.25
(it settles near 0.15 by step 150); the induction part falls when e_IH <= 0.5 (it sits at 0.78-
0.83 through the plateau after the unigram drop, 0.49 one checkpoint into the fall); the head
emerges when the best prefix-matching score of layers >= 1 reaches detect's threshold 0.3; the
two line up when they are at most one checkpoint interval apart.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import torch

from inducthead import presets
from inducthead.analysis.detect import detect
from inducthead.analysis.emergence import first_crossing
from inducthead.dynamics import Trajectory
from inducthead.model import HookedTransformer
from inducthead.training import train

FOURGRAM_LEARNED = 0.25
INDUCTION_FALLS = 0.5
HEAD_EMERGES = 0.3  # detect's prefix-matching threshold
PROBE = dict(period=20, repeats=3)  # detect's probe fitted to n_ctx 64 (BOS + 3 x 20 tokens)


def run(
    seed: int = 0,
    steps: int | None = None,
    alpha: float | None = None,
    out_dir=None,
    device=None,
    n_eval: int = 512,
    progress: bool = True,
) -> dict:
    """Train `wang-standard` (at 4-gram weight `alpha` when given) and read the loss split,
    detect's prefix matching per checkpoint and `detect` at the end (`summarise`'s dict)."""
    preset = presets.get("wang-standard")
    if alpha is not None:
        preset = presets.wang.wang_standard(alpha)
    preset = preset.with_seed(seed)
    task = preset.make_task()
    cfg = preset.train.replace(progress=progress, device=device or "auto")
    if steps is not None:  # the preset's checkpoints that fall inside the shorter run
        cfg = cfg.shortened(steps)
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(out_dir) / f"standard_seed{seed}" if out_dir else Path(tmp) / "run"
        train(HookedTransformer(preset.model), task, cfg, where, overwrite=True)
        traj = Trajectory(where, progress=progress)
        batch = task.eval_batch(n_eval, seed=seed)
        split = {}
        with torch.no_grad():
            for ref, model in traj.models():
                logits = model(batch.tokens.to(model.cfg.device)).cpu()
                split[ref.step] = task.component_losses(logits, batch)
        scores = traj.head_scores(("prefix_matching",), phase_change=False, **PROBE).data
        found = detect(traj.load(traj.steps[-1]), **PROBE)
    induction = scores[scores["layer"] >= 1].groupby("step")["value"].max()
    return summarise(split, induction.to_dict(), found, float(task.alpha), seed)


def summarise(split: dict, prefix_matching: dict, found, alpha: float, seed: int) -> dict:
    """Phase steps from the per-checkpoint loss split `{step: component_losses}` and the best
    layer >= 1 prefix matching `{step: score}` (module docstring for the thresholds)."""
    steps = sorted(split)
    ex4 = np.array([split[s]["fourgram"] - split[s]["fourgram_floor"] for s in steps])
    exi = np.array([split[s]["induction"] - split[s]["induction_floor"] for s in steps])
    e4, eih = ex4 / ex4[0], exi / exi[0]
    learned = first_crossing(steps, e4.tolist(), FOURGRAM_LEARNED, "down")
    falls = first_crossing(steps, eih.tolist(), INDUCTION_FALLS, "down")
    pm_steps = sorted(prefix_matching)
    head = first_crossing(pm_steps, [prefix_matching[s] for s in pm_steps], HEAD_EMERGES, "up")
    f4 = learned.step if learned else math.nan
    ih = falls.step if falls else math.nan
    he = head.step if head else math.nan
    interval = float(np.median(np.diff(steps))) if len(steps) > 1 else math.nan
    after = [e for s, e in zip(steps, e4, strict=True) if s > f4]
    return {
        "seed": seed,
        "alpha": alpha,
        "steps": steps,
        "fourgram_excess": ex4.round(4).tolist(),
        "induction_excess": exi.round(4).tolist(),
        "prefix_matching": [round(float(prefix_matching.get(s, math.nan)), 4) for s in steps],
        "fourgram_learned_step": f4,
        "induction_emergence_step": ih,
        "plateau_steps": ih - f4,
        "head_emergence_step": he,
        "checkpoint_interval": interval,
        "aligned": bool(abs(he - ih) <= interval),
        # the 4-gram part is briefly unlearned while the induction head forms (measured)
        "fourgram_bump": float(max(after)) if after else math.nan,
        "final_e4": float(e4[-1]),
        "final_eih": float(eih[-1]),
        "induction_heads": [f"L{layer}H{h}" for layer, h in found.induction_heads],
        "previous_token_heads": [f"L{layer}H{h}" for layer, h in found.previous_token_heads],
    }
