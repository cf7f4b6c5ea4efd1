"""Training the GIH model as the authors do: full-batch SGD (no momentum, no weight decay) on a
fixed set of sequences, staged (one parameter group after another, the paper's Theorem 3.6
analysis: C, then W, then a) or joint (all at once). The objective is the authors' scripts'
by default: a cross-entropy applied to the model's probabilities as if they were logits
(`objective="authors"`); `objective="nll"` trains on the true NLL instead. Both are recorded.
Which one matters (measured, joint, 1000 sequences, 6000 steps): on the authors' objective
p_110 stays 1.000 and a keeps growing (9.1); on the NLL p_110 peaks at 0.88 and falls to 0.37
(head 1 alone takes weight) while a levels off (7.9).

The trajectory is recorded every `record_every` steps: losses, a, p_S for every subset code and
each layer-1 head's attention on its own lag at the query slot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from inducthead._progress import progress_bar
from inducthead.papers.chen.model import GIHModel, nll

GROUPS = {"C": ("C",), "W": ("W",), "a": ("a",), "QK": ("q_proj", "k_proj"), "OV": ("o_v_proj",)}


@dataclass(frozen=True)
class Stage:
    """Train the parameter groups in `groups` ("C", "W", "a", and for the full model "QK",
    "OV", "LN") for `steps` full-batch SGD steps at `lr`."""

    groups: tuple[str, ...]
    steps: int
    lr: float

    def parameters(self, model: GIHModel) -> list[torch.nn.Parameter]:
        out = []
        for g in self.groups:
            if g == "LN":
                if model.simplified:
                    raise ValueError("the simplified model has no LayerNorm parameters ('LN').")
                out += list(model.norm.parameters())
                continue
            if g not in GROUPS:
                raise ValueError(f"unknown group {g!r}: use {sorted(GROUPS) + ['LN']}.")
            for name in GROUPS[g]:
                if not hasattr(model, name):
                    raise ValueError(f"group {g!r} needs the full model (simplified=False).")
                out.append(getattr(model, name))
        return out


def own_lag_attention(model: GIHModel, tokens: torch.Tensor | None = None) -> list[float]:
    """Each layer-1 head's attention on its own lag (h + 1) at the query slot. The slot's token
    vector is zero, so the full model's content term vanishes there too and the row is the
    softmax of the position scores alone (`GIHModel.parent_attention`); with `tokens`, it is
    read from the hooked pattern instead (a check: the two agree)."""
    if tokens is None:
        return model.parent_attention()
    name = "blocks.0.attn.hook_pattern"
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens[:256], names_filter=[name])
    A, L = cache[name], model.L
    return [float(A[:, h, L, L - (h + 1)].mean()) for h in range(model.H)]


def fit(
    model: GIHModel,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    stages: list[Stage],
    record_every: int = 20,
    progress: bool = True,
    objective: str = "authors",
) -> dict:
    """Run `stages` in order, minimising `objective` ("authors": the authors' scripts'
    cross-entropy of the probabilities taken as logits; "nll": the true -log p); returns the
    trajectory `{"step", "stage", "train_loss", "val_loss" (NLL), "authors_loss", "a",
    "p_S" {code: [...]}, "own_lag" [[per head]...]}`."""
    if not stages:
        raise ValueError("fit needs at least one Stage.")
    if objective not in ("authors", "nll"):
        raise ValueError(f"objective must be 'authors' or 'nll', got {objective!r}.")
    (xt, yt), (xv, yv) = train, val
    hist: dict = {k: [] for k in ("step", "stage", "train_loss", "val_loss", "authors_loss")}
    hist.update(a=[], p_S={c: [] for c in model.codes()}, own_lag=[])

    def record(step: int, stage: int, train_loss: float) -> None:
        with torch.no_grad():
            hist["step"].append(step)
            hist["stage"].append(stage)
            hist["train_loss"].append(train_loss)
            probs = model(xv)
            hist["val_loss"].append(float(nll(probs, yv)))
            hist["authors_loss"].append(float(torch.nn.functional.cross_entropy(probs, yv)))
            hist["a"].append(float(model.a))
            for c, p in model.p_S().items():
                hist["p_S"][c].append(p)
            hist["own_lag"].append(own_lag_attention(model))

    step, total = 0, sum(s.steps for s in stages)
    bar = progress_bar(total=total, desc="GIH training", disable=not progress)
    loss = float("nan")
    for i, stage in enumerate(stages):
        params = stage.parameters(model)
        for p in model.parameters():
            p.requires_grad_(any(p is q for q in params))
        opt = torch.optim.SGD(params, lr=stage.lr, momentum=0.0, weight_decay=0.0)
        for _ in range(stage.steps):
            if step % record_every == 0:
                record(step, i, loss)
            opt.zero_grad(set_to_none=True)
            L = model.loss(xt, yt, objective)
            L.backward()
            opt.step()
            loss = float(L.detach())
            step += 1
            bar.update(1)
    record(step, len(stages) - 1, loss)
    bar.close()
    for p in model.parameters():
        p.requires_grad_(True)
    out = {k: np.array(v) for k, v in hist.items() if k not in ("p_S", "own_lag")}
    out["p_S"] = {c: np.array(v) for c, v in hist["p_S"].items()}
    out["own_lag"] = np.array(hist["own_lag"])
    return out
