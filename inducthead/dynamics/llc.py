"""The local learning coefficient (LLC) per checkpoint, estimated with devinterp's SGLD sampler.

Estimator (Lau et al. 2023, "Quantifying degeneracy in singular models via the learning
coefficient"; Hoogland et al. 2024 use it over training): sample w from the localised tempered
posterior p(w) ~ exp(-n_beta L_n(w) - localization/2 |w - w*|^2) around the checkpoint w* with
SGLD, and report

    LLC = n_beta * (mean over draws of L_n(w) - L_n(w*))

per chain; the result is the mean and standard deviation over chains. L_n is the run's training
loss (the task's masked next-token loss) on a fixed pool of `n_data` sequences. Draws are the
SGLD steps after `num_burnin_steps` (devinterp's own `compute_llc` averages over burn-in too;
we drop it, as Lau et al. do). devinterp (PyPI `devinterp`, `pip install
'inducthead[devinterp]'`) runs the SGLD chains (`devinterp.slt.sampling.sample`); it expects a
language-model dataset of token ids, so we hand it sequence indices and compute our own loss
(`loss_fn`), which also makes `estimate_llc` work for any model and loss (the known-answer
tests use linear regression).

Diagnostics: a chain whose loss becomes non-finite has failed (devinterp stops it); a chain whose
loss still trends upwards over its draws (`rising`) has not settled: lower `lr` or raise
`localization`. A negative estimate means SGLD found lower loss than the
checkpoint's (not a local minimum at this temperature). Each warns, naming the checkpoint.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
import warnings
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd
import torch

EXTRA = "devinterp"
RISE_LIMIT = 0.5  # `rising`: the draws' trend, as a share of their mean elevation
TREND_T = 4.0  # `rising`: standard errors the trend must clear


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra."""


def rising(draws: np.ndarray, init: float, n_batches: int = 20) -> bool:
    """Whether a chain's loss still trends upwards over its draws: the slope of a line through
    `n_batches` batch means is more than `TREND_T` standard errors above zero and the rise it
    implies over the draws is more than `RISE_LIMIT` x the draws' mean elevation above the
    checkpoint's loss `init` (a chain that has settled fluctuates around a level)."""
    if len(draws) < 2 * n_batches:
        return False
    means = np.array([b.mean() for b in np.array_split(draws, n_batches)])
    x = np.arange(n_batches) - (n_batches - 1) / 2
    slope = float((x * (means - means.mean())).sum() / (x**2).sum())
    resid = means - means.mean() - slope * x
    se = float(np.sqrt((resid**2).sum() / (n_batches - 2) / (x**2).sum()))
    elevation = max(float(draws.mean()) - init, 1e-12)
    return slope > TREND_T * se and slope * n_batches > RISE_LIMIT * elevation


def require_devinterp():
    try:
        from devinterp.slt.sampling import sample
    except ImportError:
        raise MissingExtraError(
            f"the LLC needs devinterp: pip install 'inducthead[{EXTRA}]'"
        ) from None
    return sample


@contextlib.contextmanager
def quiet_chains():
    """devinterp draws one tqdm bar per chain (hundreds over a trajectory): silence them; the
    trajectory shows one bar over checkpoints instead."""
    try:
        import devinterp.slt.sampler as sampler
    except ImportError:
        yield
        return
    bar = getattr(sampler, "trange", None)
    if bar is None:  # another devinterp layout: leave its bars alone
        yield
        return
    sampler.trange = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        sampler.trange = bar


@dataclass(frozen=True)
class LLCSettings:
    """SGLD settings (devinterp's names). Defaults chosen on the demo preset's shipped
    trajectory on 2 CPU cores (benchmarks/dynamics.py, numbers in benchmarks/RESULTS.md): with
    lr 1e-3 and localization 100 every chain stays finite and settles (no `rising` warning) at
    every checkpoint, and one checkpoint costs 2 chains x 100 SGLD steps of 16 sequences, about
    5 s; lr 3e-4 had not settled after 100 steps (both chains still rising at every checkpoint),
    lr 3e-3 and 1e-2 settle at higher values (discretisation bias grows with lr: 38 / 42 / 61 at
    step 800). Compare LLCs only between estimates made with the same settings.

    - lr: SGLD step size epsilon.
    - localization: gamma, the pull towards the checkpoint's weights.
    - n_beta: inverse temperature n * beta; None = batch_size / ln(batch_size) (devinterp's
      `default_nbeta`).
    - num_chains, num_draws, num_burnin_steps, num_steps_bw_draws: chains and their lengths.
    - batch_size: sequences per SGLD step; n_data: sequences in the fixed data pool.
    - seed: data pool and SGLD noise (devinterp's init_seed).
    """

    lr: float = 1e-3
    localization: float = 100.0
    n_beta: float | None = None
    num_chains: int = 2
    num_draws: int = 80
    num_burnin_steps: int = 20
    num_steps_bw_draws: int = 1
    batch_size: int = 16
    n_data: int = 256
    seed: int = 0

    def __post_init__(self):
        for name in ("num_chains", "num_draws", "batch_size", "n_data", "num_steps_bw_draws"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"LLCSettings.{name} must be a positive int, got {v!r}.")
        if self.num_burnin_steps < 0:
            raise ValueError("LLCSettings.num_burnin_steps must be >= 0.")
        if not (self.lr > 0 and self.localization >= 0):
            raise ValueError("LLCSettings needs lr > 0 and localization >= 0.")
        if self.n_data < self.batch_size:
            raise ValueError(
                f"LLCSettings.n_data ({self.n_data}) must be >= batch_size ({self.batch_size})."
            )

    @property
    def beta(self) -> float:
        b = self.batch_size
        return self.n_beta if self.n_beta is not None else b / math.log(b) if b > 1 else 1.0

    def to_dict(self) -> dict:
        return {**asdict(self), "n_beta": self.beta}


class _Indexed(torch.nn.Module):
    """What devinterp samples: the model's parameters, with our loss on indexed data."""

    def __init__(self, model):
        super().__init__()
        self.model = model


def estimate_llc(
    model, loss_fn, n_data: int, settings: LLCSettings, param_masks=None, device=None
) -> dict:
    """The LLC of `model` at its current weights. `loss_fn(model, index)` returns the
    per-example loss `[len(index)]` of the examples `index` (a long tensor into a pool of
    `n_data`); L_n is its mean. `param_masks`: `{parameter name: bool mask or None}` restricting
    SGLD (others frozen). Returns llc_mean, llc_std, llc_per_chain, init_loss, trace
    (`[chains, steps]`), warnings and seconds."""
    sample = require_devinterp()
    from datasets import Dataset

    start = time.perf_counter()
    wrapped = _Indexed(model)
    ds = Dataset.from_dict({"input_ids": [[i, i] for i in range(n_data)]}).with_format("torch")

    def per_token(m, input_ids):
        return loss_fn(m.model, input_ids[:, 0].long())[:, None]

    masks = None
    if param_masks is not None:
        masks = {f"model.{k}": v for k, v in param_masks.items()}
    device = device or str(next(model.parameters()).device)
    s = settings
    with warnings.catch_warnings(record=True) as caught, quiet_chains():
        warnings.simplefilter("always")
        tree = sample(
            wrapped,
            ds,
            {},
            lr=s.lr,
            n_beta=s.beta,
            param_masks=masks,
            num_chains=s.num_chains,
            num_draws=s.num_draws,
            batch_size=s.batch_size,
            num_burnin_steps=s.num_burnin_steps,
            num_steps_bw_draws=s.num_steps_bw_draws,
            num_init_loss_batches=max(1, n_data // s.batch_size),
            init_seed=s.seed,
            localization=s.localization,
            device=device,
            loss_fn=per_token,
        )
        ds_out = tree.dataset
        trace = ds_out.sampling_loss_micro.mean(dim=["batch_sampling", "token_pos"]).values
        init = float(ds_out.init_loss.values.mean())
    failures = [str(w.message) for w in caught if "Chain failed" in str(w.message)]
    draws = trace[:, s.num_burnin_steps :]
    per_chain = np.full(s.num_chains, np.nan)
    seen = np.isfinite(draws).any(axis=1) if draws.size else np.zeros(s.num_chains, bool)
    # a chain with no finite draw stays NaN (said below), without numpy's empty-slice warning
    per_chain[seen] = s.beta * (np.nanmean(draws[seen], axis=1) - init)
    notes = list(failures)
    finite = np.isfinite(trace).all(axis=1)
    for c in np.flatnonzero(~finite):
        notes.append(
            f"chain {c} failed: its loss became non-finite (lower lr or raise localization)"
        )
        per_chain[c] = np.nan
    for c in np.flatnonzero(finite):
        if rising(draws[c], init):
            notes.append(
                f"chain {c} has not settled: its loss is still rising (lower lr or raise "
                "localization)"
            )
    mean = float(np.nanmean(per_chain)) if np.isfinite(per_chain).any() else math.nan
    std = float(np.nanstd(per_chain)) if np.isfinite(per_chain).sum() > 1 else math.nan
    if mean < 0:
        notes.append(
            "negative LLC: SGLD found lower loss than the checkpoint's (not a local minimum "
            "at this temperature; lower lr or raise localization)"
        )
    return {
        "llc_mean": mean,
        "llc_std": std,
        "llc_per_chain": per_chain.tolist(),
        "init_loss": init,
        "trace": trace.tolist(),
        "chains_ok": int(finite.sum()),
        "warnings": notes,
        "seconds": time.perf_counter() - start,
    }


def head_masks(model, heads) -> dict:
    """`{parameter: bool mask}` selecting the Q, K, V, O weights of `heads` (our
    HookedTransformer's layout `[n_heads, ...]`): the weight-restricted (per-head) LLC."""
    from inducthead.analysis import check_heads

    heads = check_heads(heads, model.cfg)
    params = dict(model.named_parameters())
    masks = {}
    for layer, head in heads:
        for w in ("W_Q", "W_K", "W_V", "W_O"):
            name = f"blocks.{layer}.attn.{w}"
            if name not in params:
                raise ValueError(
                    f"per-head LLC needs our HookedTransformer's {name}; this model has none."
                )
            p = params[name]
            if p.shape[0] != model.cfg.n_heads:
                raise ValueError(
                    f"{name} has {p.shape[0]} heads (grouped-query); per-head LLC needs one "
                    "per head."
                )
            mask = masks.setdefault(name, torch.zeros_like(p, dtype=torch.bool))
            mask[head] = True
    return masks


def task_loss(batch):
    """`loss_fn` for `estimate_llc`: the mean masked next-token loss of each indexed sequence of
    `batch` (the task's training loss)."""
    from inducthead.model import token_nll

    def loss(model, index):
        tokens = batch.tokens[index].to(model.W_E.device)
        targets, mask = (
            batch.targets[index].to(tokens.device),
            batch.mask[index].to(tokens.device).float(),
        )
        nll = token_nll(model(tokens), targets)
        return (nll * mask).sum(1) / mask.sum(1).clamp(min=1)

    return loss


def trajectory_llc(traj, settings=None, heads=None, **overrides):
    """`Trajectory.llc`: `estimate_llc` at every checkpoint (cached), its critical points and
    fastest change."""
    from inducthead.dynamics import stages
    from inducthead.dynamics.results_pca import LLCResult

    require_devinterp()
    settings = replace(settings or LLCSettings(), **overrides)
    heads_key = sorted(str(h) for h in heads) if heads else None
    spec = {"settings": settings.to_dict(), "heads": heads_key, **traj.data_spec()}
    pool: dict = {}

    def fn(adapter):
        if "batch" not in pool:
            pool["batch"] = traj.example_batch(adapter, settings.n_data, 10_000 + settings.seed)
        model = adapter.model
        masks = head_masks(model, heads) if heads else None
        with torch.enable_grad():
            return estimate_llc(model, task_loss(pool["batch"]), settings.n_data, settings, masks)

    by_step = traj.compute({"llc": (spec, fn)})["llc"]
    steps = sorted(by_step)
    rows, traces = [], []
    for step in steps:
        v = by_step[step]
        for note in v["warnings"]:
            warnings.warn(f"LLC at step {step} of {traj.name}: {note}", stacklevel=3)
        rows.append(
            {
                "step": step,
                "llc_mean": v["llc_mean"],
                "llc_std": v["llc_std"],
                "init_loss": v["init_loss"],
                "chains_ok": v["chains_ok"],
                "warnings": "; ".join(v["warnings"]),
                "seconds": v["seconds"],
            }
        )
        for c, trace in enumerate(v["trace"]):
            traces += [(step, c, i, x) for i, x in enumerate(trace)]
    data = pd.DataFrame(rows)
    w = stages.steepest_window(steps, data["llc_mean"], "any", signal="LLC")
    return LLCResult(
        name=traj.name + (f" ({', '.join(heads_key)})" if heads_key else ""),
        settings=settings.to_dict(),
        boundaries=stages.critical_points(steps, data["llc_mean"]),
        window=w.to_dict() if w else None,
        seconds_per_checkpoint=float(np.mean([v["seconds"] for v in by_step.values()])),
        data=data,
        traces=pd.DataFrame(traces, columns=["step", "chain", "sgld_step", "loss"]),
    )
