"""`reproduce(mode)`: Chen et al. 2024 end to end, as a `ChenResult`.

Both modes train the simplified GIH model (the authors' `SimplifiedTwoLayerTransformer`, their
joint-training result file: w+ 3, w- 0.1, C and a initialised at 0.01, lr 1, full-batch SGD)
joint and staged, the full model (q/k/o_v projections and LayerNorm; lr 1e-3, w- 0.01) joint,
and compare each to the in-context Bayes estimator on the same validation sequences. Every run
minimises the authors' objective (their scripts' cross-entropy of the probabilities taken as
logits); `joint_nll` repeats the joint run on the true NLL, which changes the outcome
(`papers.chen.train`): the selector does not stay on S*.

- quick (< 3 min on 2 CPU cores): 1000 training and 500 validation sequences; joint 300 steps,
  staged C -> W -> a 100 steps each (W at lr 100: `W_STAGE_LR`); the full model 200 steps at
  lr 3e-2 (its lr 1e-3 needs tens of thousands); joint on the NLL 3000 steps (past its peak).
- full (the authors' settings, GPU when present): 9000 / 1000 sequences, 50000 steps joint
  (simplified and full model, and joint on the NLL), staged 20000 steps per stage.
"""

from __future__ import annotations

import time

import torch

from inducthead.papers.chen import claims
from inducthead.papers.chen.model import GIHModel
from inducthead.papers.chen.train import Stage, fit, own_lag_attention
from inducthead.papers.common import ReproductionResult
from inducthead.tasks import NGramMarkovICL
from inducthead.training.speed import cpu_threads

MODES = {
    "quick": dict(
        n_train=1000, n_val=500, joint=300, staged=100, full_steps=200, full_lr=3e-2, nll=3000
    ),
    "full": dict(
        n_train=9000,
        n_val=1000,
        joint=50000,
        staged=20000,
        full_steps=50000,
        full_lr=1e-3,
        nll=50000,
    ),
}
SIMPLIFIED = dict(w_plus=3.0, w_minus=0.1, a_init=0.01, c_init=0.01)
# W's gradient carries a factor a (the selector's scale, 0.01 while W trains in the staged
# scheme), so stage 2 at lr 1 barely moves in any CPU budget (own-lag 0.901 -> 0.902 in 150
# steps, measured); lr 1 / a_init = 100 runs the same gradient-flow path in 100x less time
# (0.901 -> 0.947 / 0.958, head 3 unchanged). The authors' staged file trains C and W together
# for 500000 epochs instead.
W_STAGE_LR = 100.0
FULL = dict(w_plus=3.0, w_minus=0.01, a_init=0.01, c_init=0.01, simplified=False)


class ChenResult(ReproductionResult):
    """`reproduce("quick" | "full")`'s result (`papers.common.ReproductionResult`)."""

    def plot(self, **kwargs):
        from inducthead.papers.chen.plots import figure

        return figure(self, **kwargs)


def head_ablation(model: GIHModel, tokens: torch.Tensor, target: torch.Tensor) -> dict:
    """Validation NLL increase when one layer-1 head's output is zeroed (hook
    `blocks.0.ln.hook_normalized`): the causal check that the selector reads the parent heads."""
    with torch.no_grad():
        base = float(model.loss(tokens, target))
        out = {}
        for h in range(model.H):

            def zero(v, hook, h=h):
                v = v.clone()
                v[:, :, h] = 0
                return v

            with model.hooks(fwd_hooks=[("blocks.0.ln.hook_normalized", zero)]):
                out[f"L0H{h}"] = float(model.loss(tokens, target)) - base
    return out


def summarise(model: GIHModel, hist: dict, val, bayes: float) -> dict:
    xv, yv = val
    p = model.p_S()
    return {
        "p_star": p["110"],
        "p_S": p,
        "parent_attention": own_lag_attention(model),
        "a_final": float(model.a.detach()),
        "val_loss": float(model.loss(xv, yv).detach()),
        "authors_val_loss": float(model.loss(xv, yv, "authors").detach()),
        "bayes_loss": bayes,
        "head_ablation": head_ablation(model, xv, yv),
        "steps": int(hist["step"][-1]),
    }


RUNS = ("joint", "staged", "full_model", "joint_nll")


def reproduce(
    mode: str = "quick",
    out_dir=None,
    device=None,
    seeds=(2024,),
    progress: bool = True,
    runs=RUNS,
) -> ChenResult:
    """Run the reproduction (data seed `seeds[0]`, the authors' 2024 by default); with
    `out_dir`, write metrics.json and figure.png there. `runs`: which trainings (`RUNS`;
    "joint" always, the headline metrics are its), e.g. `("joint",)` for full mode's joint
    50000 steps alone; the others' claims then read "not run"."""
    if mode not in MODES:
        raise ValueError(f"mode must be 'quick' or 'full', got {mode!r}.")
    runs = tuple(runs)
    unknown = sorted(set(runs) - set(RUNS))
    if unknown or "joint" not in runs:
        raise ValueError(f"runs must include 'joint' and come from {RUNS}, got {runs!r}.")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("reproduce needs a seed.")
    dev = torch.device(
        device or ("cuda" if torch.cuda.is_available() and mode == "full" else "cpu")
    )
    # one thread: the elementwise work is small per op; two threads on 2 shared cores were slower
    with cpu_threads(1, dev):
        return _reproduce(mode, out_dir, dev, seeds[0], progress, runs)


def _reproduce(mode, out_dir, dev, seed, progress, chosen) -> ChenResult:
    cfg, start = MODES[mode], time.perf_counter()
    task = NGramMarkovICL(n_states=3, seq_len=100, order=2, alpha=0.1)
    n, nv = cfg["n_train"], cfg["n_val"]
    batch = task.sample(n + nv, seed=seed)
    x, y = batch.tokens.to(dev), batch.targets[:, -1].to(dev)
    train, val = (x[:n], y[:n]), (x[n:], y[n:])
    bayes = float(task.bayes_loss(batch)[n:, -1].mean())
    m: dict = {"mode": mode, "seed": seed, "n_train": n, "n_val": nv, "stage_s": {}}
    curves: dict = {}

    def lap(name: str) -> None:
        m["stage_s"][name] = round(time.perf_counter() - start - sum(m["stage_s"].values()), 2)

    runs = {
        "joint": (SIMPLIFIED, [Stage(("C", "W", "a"), cfg["joint"], 1.0)]),
        "staged": (
            SIMPLIFIED,
            [
                Stage((g,), cfg["staged"], lr)
                for g, lr in (("C", 1.0), ("W", W_STAGE_LR), ("a", 1.0))
            ],
        ),
        "full_model": (
            FULL,
            [Stage(("C", "W", "a", "QK", "OV"), cfg["full_steps"], cfg["full_lr"])],
        ),
        "joint_nll": (SIMPLIFIED, [Stage(("C", "W", "a"), cfg["nll"], 1.0)]),
    }
    for name, (kw, stages) in runs.items():
        if name not in chosen:
            continue
        torch.manual_seed(seed)
        model = GIHModel(**kw).to(dev)
        every = max(sum(s.steps for s in stages) // 40, 1)
        objective = "nll" if name == "joint_nll" else "authors"
        hist = fit(model, train, val, stages, every, progress, objective)
        m[name] = summarise(model, hist, val, bayes)
        m[name]["peak_p_star"] = float(max(hist["p_S"]["110"]))
        m[name]["settings"] = {**kw, "objective": objective, "stages": [s.__dict__ for s in stages]}
        curves[name] = {k: v.tolist() for k, v in hist.items() if k not in ("p_S",)}
        curves[name]["p_S"] = {c: v.tolist() for c, v in hist["p_S"].items()}
        lap(name)
    j = m["joint"]
    m.update({k: j[k] for k in ("p_star", "p_S", "parent_attention", "a_final", "val_loss")})
    m["bayes_loss"] = bayes
    ours, status = claims.judge(m)
    m["wall_s"] = time.perf_counter() - start
    result = ChenResult("chen2024", mode, m, claims.PAPER, ours, status, curves, m["wall_s"])
    if out_dir is not None:
        result.write(out_dir)
    return result
