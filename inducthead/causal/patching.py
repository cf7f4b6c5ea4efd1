"""Activation patching of heads and path patching into one head's query, key or value input.

Conventions are TransformerLens's (`transformer_lens.patching`): the model runs the *corrupted*
input and activations from the *clean* run are patched in; metrics are evaluated against the
clean batch's targets, and `recovered` = (patched - corrupted) / (clean - corrupted).

`path_patch(model, sender, receiver, via="k")` is the direct test of K-composition: the sender's
clean output reaches only the receiver's key input, every other reader sees the corrupted run. It
works on any hooked model in two passes: pass A adds the sender's (clean - corrupted) write to the
residual stream entering the receiver's layer and reads the receiver's `hook_k` there; pass B is
the corrupted run with only the receiver's `hook_k` replaced by that value. This is exactly
TransformerLens's `get_act_patch_direct_path` (which adds the same difference to the receiver's
per-head `hook_k_input`; tested equal on a GPT-2 bridge), but needs no `use_split_qkv_input`,
which `TransformerBridge.boot_native` models and our models without that flag do not offer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from inducthead.analysis.adapters import ModelAdapter
from inducthead.analysis.attention import induction_attention
from inducthead.analysis.heads import Head, check_heads, head_label
from inducthead.analysis.results import Result, nan_if_none, source_label
from inducthead.causal.ablation import Ablation
from inducthead.causal.data import Data, as_batch, describe
from inducthead.causal.metrics import evaluate, resolve_metrics
from inducthead.tasks import Batch

__all__ = ["patch_heads", "path_patch", "patch_path", "PatchResult", "shuffled", "SITES", "VIAS"]

SITES = ("z", "pattern")
VIAS = ("q", "k", "v")


def shuffled(batch: Batch, seed: int = 0) -> Batch:
    """The default corrupted input: each sequence's tokens in a random order (position 0, the BOS,
    kept), so the same tokens occur without their repeats. Targets and mask stay the clean ones."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    b, p = batch.tokens.shape
    order = torch.rand(b, p - 1, generator=g).argsort(-1).to(batch.tokens.device) + 1
    zero = torch.zeros(b, 1, dtype=torch.long, device=batch.tokens.device)
    tokens = batch.tokens.gather(1, torch.cat([zero, order], 1))
    return Batch(tokens, batch.targets, batch.mask, batch.info)


def _tokens_like(adapter: ModelAdapter, data: Data, clean: Batch) -> Tensor:
    tokens = as_batch(adapter, data).tokens if not isinstance(data, Tensor) else data
    tokens = tokens.to(adapter.device)
    if tokens.shape != clean.tokens.shape:
        raise ValueError(
            f"corrupted tokens have shape {tuple(tokens.shape)}, clean ones "
            f"{tuple(clean.tokens.shape)}: patching needs the same shape."
        )
    return tokens


def run_capturing(adapter: ModelAdapter, tokens: Tensor, hooks, names, **kwargs):
    """Logits (or what `kwargs` ask for) and `{name: activation}` as seen AFTER `hooks`."""
    seen: dict[str, Tensor] = {}

    def saver(name: str):  # by our name: a bridge may call the hook with its canonical name
        def save(x, hook):
            seen[name] = x.detach().clone()

        return save

    with torch.no_grad():
        out = adapter.model.run_with_hooks(
            tokens, fwd_hooks=list(hooks) + [(n, saver(n)) for n in names], **kwargs
        )
    missing = [n for n in names if n not in seen]
    if missing:
        raise RuntimeError(f"hook points {missing} did not fire on {adapter.name}.")
    return out, seen


@dataclass
class PatchResult(Result):
    """Metrics of the clean, corrupted and patched runs (against the clean targets), and for path
    patching the receiver's induction attention in each run. `to_dataframe()`: one row per
    metric (and one for the receiver's attention)."""

    description: str
    clean: dict[str, float]
    corrupted: dict[str, float]
    patched: dict[str, float]
    attention: dict[str, float] = field(default_factory=dict)
    source: dict | None = None  # the checkpoint analysed: {"path", "step"}, when loaded from one

    @property
    def recovered(self) -> dict[str, float]:
        """(patched - corrupted) / (clean - corrupted) per metric; NaN where clean == corrupted."""
        return {k: _recovered(c, self.corrupted[k], self.patched[k]) for k, c in self.clean.items()}

    @property
    def attention_recovered(self) -> float:
        a = self.attention
        return _recovered(a["clean"], a["corrupted"], a["patched"]) if a else math.nan

    def to_dataframe(self):
        import pandas as pd

        rows = [
            {
                "metric": k,
                "clean": self.clean[k],
                "corrupted": self.corrupted[k],
                "patched": self.patched[k],
                "recovered": self.recovered[k],
            }
            for k in self.clean
        ]
        if self.attention:
            a = self.attention
            rows.append({"metric": "receiver_induction_attention", **a})
            rows[-1]["recovered"] = self.attention_recovered
        return pd.DataFrame(rows, columns=["metric", "clean", "corrupted", "patched", "recovered"])

    def to_dict(self) -> dict:
        return {
            "description": self.description,
            "clean": self.clean,
            "corrupted": self.corrupted,
            "patched": self.patched,
            "attention": self.attention,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, d: dict) -> PatchResult:
        floats = {k: {m: nan_if_none(v) for m, v in d.get(k, {}).items()} for k in _RUNS}
        runs = (floats[k] for k in _RUNS[:3])
        return cls(d["description"], *runs, floats["attention"], d.get("source"))

    def plot(self, **kwargs):
        """Clean, corrupted and patched values side by side, one panel per metric, each bar
        labelled with its value and the panel with the share of the gap recovered."""
        from inducthead import plotstyle

        df = self.to_dataframe()
        fig, axes = plotstyle.panel_grid(len(df), max_cols=4, panel_size=(3.2, 3.0), **kwargs)
        for ax, (_, row) in zip(axes, df.iterrows(), strict=True):
            values = [row["clean"], row["corrupted"], row["patched"]]
            bars = ax.bar(["clean", "corrupted", "patched"], values, color=_RUN_COLOURS)
            ax.bar_label(bars, fmt="%.3g", fontsize=8)
            ax.margins(y=0.15)  # room for the labels
            recovered = row["recovered"]
            rec = f"{recovered:.0%} recovered" if recovered == recovered else "no gap to recover"
            ax.set_title(f"{row['metric']} ({rec})", fontsize=9)
        return plotstyle.finish(fig, self.description)

    def __repr__(self) -> str:
        rec = self.recovered
        parts = [
            f"{k} clean {self.clean[k]:.3f} / corrupted {self.corrupted[k]:.3f} / patched "
            f"{self.patched[k]:.3f} ({rec[k]:.0%} recovered)"
            for k in self.clean
        ]
        if self.attention:
            a = self.attention
            parts.append(
                f"receiver induction attention {a['clean']:.3f} / {a['corrupted']:.3f} / "
                f"{a['patched']:.3f}"
            )
        return (
            f"PatchResult({self.description}{source_label(self.source)}: " + "; ".join(parts) + ")"
        )


_RUNS = ("clean", "corrupted", "patched", "attention")
_RUN_COLOURS = ("C0", "C3", "C2")  # clean, corrupted, patched


def _recovered(clean: float, corrupted: float, patched: float) -> float:
    gap = clean - corrupted
    return (patched - corrupted) / gap if gap else math.nan


def patch_heads(
    model,
    clean: Data = None,
    corrupted: Data = None,
    heads=None,
    site: str = "z",
    metric=("loss", "accuracy"),
) -> PatchResult:
    """Activation patching of `heads` (together), clean -> corrupted: the corrupted run with the
    heads' `hook_z` (site="z", their outputs) or `hook_pattern` (site="pattern") from the clean
    run. `corrupted` defaults to `shuffled(clean)`. For one head at a time over all heads,
    TransformerLens's `get_act_patch_attn_head_out_all_pos` / `..._pattern_all_pos` on a
    TransformerBridge (`inducthead.to_bridge(model)`) give the same numbers (tested)."""
    adapter = ModelAdapter.wrap(model)
    if site not in SITES:
        raise ValueError(f"site must be one of {SITES}, got {site!r}.")
    if heads is None:
        raise ValueError("patch_heads needs heads, e.g. ['L1H0'] or [(1, 0)].")
    heads = check_heads(heads, adapter)
    batch = as_batch(adapter, clean)
    metrics = resolve_metrics(metric)
    x_tokens = _tokens_like(adapter, shuffled(batch) if corrupted is None else corrupted, batch)
    layers = sorted({l for l, _ in heads})
    hook_name = adapter.z_hook if site == "z" else adapter.pattern_hook
    names = [hook_name(l) for l in layers]
    clean_logits, cache = run_capturing(adapter, batch.tokens, [], names)
    x_logits = adapter.logits(x_tokens)

    def setter(layer: int):
        idx = [h for l, h in heads if l == layer]
        source = cache[hook_name(layer)]

        def hook(act, hook):
            act = act.clone()
            if site == "z":
                act[:, :, idx] = source[:, :, idx].to(act.dtype)
            else:
                act[:, idx] = source[:, idx].to(act.dtype)
            return act

        return hook

    patched = adapter.logits(x_tokens, [(hook_name(l), setter(l)) for l in layers])
    names_h = ", ".join(head_label(h) for h in heads)
    return PatchResult(
        f"{names_h} ({site}) clean -> corrupted on {describe(batch)}",
        evaluate(metrics, clean_logits, batch),
        evaluate(metrics, x_logits, batch),
        evaluate(metrics, patched, batch),
        source=adapter.source,
    )


def path_patch(
    model,
    sender,
    receiver,
    via: str = "k",
    clean: Data = None,
    corrupted: Data = None,
    metric=("loss", "accuracy"),
    mode: str = "zero",
) -> PatchResult:
    """Path patching (Wang et al. 2022; Goldowsky-Dill et al. 2023): the `sender` heads' clean
    output reaches only the `receiver` head's `via` input ("q", "k" or "v"); everything else runs
    on the corrupted input. With `via="k"` and a previous-token sender this is the direct test of
    K-composition, the induction mechanism (Elhage et al. 2021).

    `clean`: data (default `causal.data.default_data`). `corrupted`: token ids or data of the same
    shape; by default the clean tokens with the senders ablated (`mode`: "zero" or "mean"), so the
    result says how much of what the senders do reaches the model through the receiver's `via`
    input.
    `.attention` holds the receiver's induction attention (prefix matching on the clean tokens)
    in each run; `.recovered` the share of each metric the patch restores."""
    adapter = ModelAdapter.wrap(model)
    if via not in VIAS:
        raise ValueError(f"via must be one of {VIAS}, got {via!r}.")
    senders = check_heads(sender, adapter)
    (r_layer, r_head), *extra = check_heads(receiver, adapter)
    if extra:
        raise ValueError("path_patch takes one receiver head; call it once per receiver.")
    if any(l >= r_layer for l, _ in senders):
        raise ValueError(
            f"senders must sit in layers before the receiver {head_label((r_layer, r_head))}; "
            f"got {', '.join(head_label(h) for h in senders)}."
        )
    batch = as_batch(adapter, clean)
    if corrupted is None and mode not in ("zero", "mean"):
        raise ValueError(f"mode must be 'zero' or 'mean', got {mode!r}.")
    metrics = resolve_metrics(metric)
    return patch_path(adapter, senders, Head(r_layer, r_head), via, batch, metrics, corrupted, mode)


def patch_path(
    adapter: ModelAdapter,
    senders: list[Head],
    receiver: Head,
    via: str,
    batch: Batch,
    metrics: dict,
    corrupted: Data = None,
    mode: str = "zero",
) -> PatchResult:
    """`path_patch` on an adapted model with checked heads and a prepared batch (what `verify`
    calls)."""
    r_layer, r_head = receiver
    if corrupted is None:
        x_tokens = batch.tokens
        x_hooks = Ablation(adapter, senders, mode).z_hooks
        what = f"{'+'.join(head_label(h) for h in senders)} {mode}-ablated"
    else:
        x_tokens = _tokens_like(adapter, corrupted, batch)
        x_hooks = []
        what = "corrupted tokens"
    s_layers = sorted({l for l, _ in senders})
    z_names = [adapter.z_hook(l) for l in s_layers]
    pattern = adapter.pattern_hook(r_layer)
    clean_logits, c_cache = run_capturing(adapter, batch.tokens, [], z_names + [pattern])
    x_logits, x_cache = run_capturing(adapter, x_tokens, x_hooks, z_names + [pattern])

    W_O = adapter.W_O
    delta = 0.0
    for l, h in senders:
        diff = c_cache[adapter.z_hook(l)][:, :, h] - x_cache[adapter.z_hook(l)][:, :, h]
        delta = delta + diff.float() @ W_O[l, h].detach().float()

    resid = f"blocks.{r_layer}.hook_resid_pre"
    via_name = f"blocks.{r_layer}.attn.hook_{via}"

    def add_delta(x, hook):
        return x + delta.to(x.dtype)

    # Pass A: the receiver layer's `via` activation computed from the swapped residual.
    _, a_cache = run_capturing(
        adapter, x_tokens, x_hooks + [(resid, add_delta)], [via_name], stop_at_layer=r_layer + 1
    )
    swapped = a_cache[via_name]
    if swapped.ndim != 4 or swapped.shape[2] != adapter.n_heads:
        raise ValueError(
            f"{via_name} has shape {tuple(swapped.shape)}, not [batch, pos, "
            f"n_heads={adapter.n_heads}, d_head]: per-head path patching of grouped key/value "
            "heads is undefined (use via='q')."
        )

    def replace(x, hook):
        x = x.clone()
        x[:, :, r_head] = swapped[:, :, r_head].to(x.dtype)
        return x

    # Pass B: the corrupted run with only the receiver head's `via` input swapped.
    p_logits, p_cache = run_capturing(adapter, x_tokens, x_hooks + [(via_name, replace)], [pattern])

    def attention(cache) -> float:
        return float(induction_attention(cache[pattern][:, r_head : r_head + 1], batch.tokens)[0])

    return PatchResult(
        f"{'+'.join(head_label(h) for h in senders)} -> {head_label((r_layer, r_head))} via "
        f"{via}, clean -> {what}",
        evaluate(metrics, clean_logits, batch),
        evaluate(metrics, x_logits, batch),
        evaluate(metrics, p_logits, batch),
        {
            "clean": attention(c_cache),
            "corrupted": attention(x_cache),
            "patched": attention(p_cache),
        },
        source=adapter.source,
    )
