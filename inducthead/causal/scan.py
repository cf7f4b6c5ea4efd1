"""Ablation scans: the effect of ablating each head alone, `[n_layers, n_heads]` per metric, in
batched forwards (one head per stacked copy of the batch), and `AblationResult`."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from inducthead.analysis.adapters import ModelAdapter
from inducthead.analysis.heads import Head, all_heads, check_heads, head_label
from inducthead.analysis.results import HeadTable, from_jsonable, source_label
from inducthead.causal.ablation import (
    check_mode,
    mean_reference,
    pattern_hooks,
    record_patterns,
    replace_heads_hook,
    z_means,
)
from inducthead.causal.data import Data, as_batch
from inducthead.causal.metrics import evaluate, resolve_metrics
from inducthead.tasks import Batch


def _chunk_size(
    adapter: ModelAdapter, batch: int, positions: int, max_batch: int | None, patterns: bool
) -> int:
    """Heads stacked per forward: bounded by `max_batch` sequences, else by ~2^27 elements of
    logits (plus the tiled attention patterns of a pattern-preserving scan)."""
    if max_batch is not None:
        return max(1, max_batch // batch)
    per_copy = batch * positions * adapter.d_vocab_out
    if patterns:
        per_copy += batch * adapter.n_layers * adapter.n_heads * positions**2
    return max(1, (1 << 27) // per_copy)


def ablation_scan(
    model,
    data: Data = None,
    metric="loss",
    mode: str = "zero",
    *,
    reference: Data = None,
    heads=None,
    max_batch: int | None = None,
) -> AblationResult:
    """The effect of ablating each head alone: `[n_layers, n_heads]` per metric, ablated minus
    clean (positive loss effect = the head helps).

    `data`: a `Batch`, token ids `[batch, pos]` or None (`causal.data.default_data`);
    `metric`: "loss", "accuracy", "logit_diff", "icl_score", a callable `metric(logits, batch)`,
    or a list / dict of them. `heads` restricts the scan (others are NaN). Several heads are
    ablated in one forward by stacking copies of the batch (one head per copy); `max_batch`
    bounds the sequences per forward (default: about 2^27 logits).
    """
    adapter = ModelAdapter.wrap(model)
    check_mode(mode)
    batch = as_batch(adapter, data)
    heads = all_heads(adapter.n_layers, adapter.n_heads) if heads is None else heads
    return scan_heads(adapter, batch, resolve_metrics(metric), mode, reference, heads, max_batch)


def scan_heads(
    adapter: ModelAdapter,
    batch: Batch,
    metrics: dict,
    mode: str,
    reference: Data = None,
    heads=None,
    max_batch: int | None = None,
) -> AblationResult:
    """`ablation_scan` on an adapted model and a prepared batch (what `verify` calls)."""
    heads = check_heads(heads, adapter)
    tokens = batch.tokens
    B = tokens.shape[0]
    means = {}
    ref_name = None
    if mode == "mean":
        reference, ref_name = mean_reference(adapter, reference)
        means = z_means(adapter, reference, {l for l, _ in heads})
    patterns = record_patterns(adapter, tokens) if mode == "pattern_preserving" else {}
    clean_hooks = pattern_hooks(adapter, patterns)
    clean = evaluate(metrics, adapter.logits(tokens, clean_hooks), batch)
    effects = {k: torch.full((adapter.n_layers, adapter.n_heads), math.nan) for k in metrics}
    k = _chunk_size(adapter, B, tokens.shape[1], max_batch, mode == "pattern_preserving")
    # Ablating a head of layer l leaves blocks 0..l-1 clean: where the model can resume a
    # forward (`resumes`), the clean residual entering block l is computed once (block by block
    # as the layers go up) and the stacked copies run only blocks l.. (a 12-layer scan then runs
    # ~6.5 blocks per head instead of 12).
    start, stream = 0, tokens  # `stream` enters block `start`: token ids while start is 0
    for layer in sorted({l for l, _ in heads}):
        if adapter.resumes and layer > start:
            stream = adapter.residual(stream, start, layer, clean_hooks)
            start = layer
        mine = [h for l, h in heads if l == layer]
        later = {l: p for l, p in patterns.items() if l >= start}
        for first in range(0, len(mine), k):
            chunk = mine[first : first + k]
            values = {h: (means[layer][h] if mode == "mean" else None) for h in chunk}
            hooks = [(adapter.z_hook(layer), replace_heads_hook(values, block=B))]
            hooks += pattern_hooks(adapter, later, repeat=len(chunk))
            stacked = stream.repeat(len(chunk), *[1] * (stream.ndim - 1))
            logits = adapter.logits(stacked, hooks, start_at_layer=start)
            for i, h in enumerate(chunk):
                result = evaluate(metrics, logits[i * B : (i + 1) * B], batch)
                for name, value in result.items():
                    effects[name][layer, h] = value - clean[name]
    return AblationResult(effects, clean, mode, adapter.name, B, ref_name, adapter.source)


class AblationResult(HeadTable):
    """Per-head ablation effects from `ablation_scan`: `.scores[metric]` is `[n_layers, n_heads]`,
    ablated minus clean; `.clean[metric]` the unablated value; `.ablated[metric]` the ablated
    values."""

    title = "inducthead.ablation_scan (ablated - clean)"
    DEFAULT_KIND = "effect"
    NOTABLE_SHARE = 0.05  # outlined on the plot: |effect| >= this share of the largest

    def __init__(self, scores, clean, mode, model_name, n_sequences, reference=None, source=None):
        self.source = source  # the checkpoint analysed: {"path", "step"}, when loaded from one
        self.scores = {k: v.detach().float().cpu() for k, v in scores.items()}
        self.clean = dict(clean)
        self.mode = mode
        self.model_name = model_name
        self.n_sequences = n_sequences
        self.reference = reference

    @property
    def ablated(self) -> dict[str, Tensor]:
        return {k: self.clean[k] + v for k, v in self.scores.items()}

    def strongest(self, metric: str | None = None, k: int = 3) -> list[Head]:
        """The `k` heads with the largest |effect| on `metric` (default: the first)."""
        values = self.scores[metric or next(iter(self.scores))]
        finite = [(h, abs(float(values[h]))) for h in self.heads() if math.isfinite(values[h])]
        return [h for h, _ in sorted(finite, key=lambda x: -x[1])[:k]]

    def notable(self, metric: str | None = None, share: float | None = None) -> list[Head]:
        """Heads whose |effect| on `metric` (default: the first) is at least `share` (default
        `NOTABLE_SHARE`, 0.05) of the largest, strongest first; none when every effect is 0."""
        share = self.NOTABLE_SHARE if share is None else share
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share}.")
        values = self.scores[metric or next(iter(self.scores))]
        finite = [(h, abs(float(values[h]))) for h in self.heads() if math.isfinite(values[h])]
        top = max((v for _, v in finite), default=0.0)
        return [h for h, v in sorted(finite, key=lambda x: -x[1]) if top > 0 and v >= share * top]

    def outlines(self, key: str) -> dict[str, list[Head]]:
        top = max(
            (abs(float(v)) for v in self.scores[key].flatten() if math.isfinite(v)), default=0
        )
        label = f"{key}: |effect| >= {self.NOTABLE_SHARE:.0%} of the largest ({top:.3g})"
        return {label: self.notable(key)}

    def colorbar_label(self, key: str) -> str:
        return f"ablated - clean {key}"

    def to_dataframe(self):
        """One row per head: `delta_<metric>` (ablated - clean) and `<metric>_clean`."""
        df = super().to_dataframe()
        return df.rename(columns={k: f"delta_{k}" for k in self.scores})

    def extra_columns(self) -> dict[str, list]:
        return {f"{k}_clean": [self.clean[k]] * len(self.heads()) for k in self.scores}

    def to_dict(self) -> dict:
        return {
            "model": self.model_name,
            "source": self.source,
            "mode": self.mode,
            "n_sequences": self.n_sequences,
            "reference": self.reference,
            "clean": self.clean,
            "effects": self.scores,
        }

    @classmethod
    def from_dict(cls, d: dict) -> AblationResult:
        scores = {k: from_jsonable(v) for k, v in d["effects"].items()}
        return cls(
            scores,
            d["clean"],
            d["mode"],
            d["model"],
            d["n_sequences"],
            d["reference"],
            d.get("source"),
        )

    def __repr__(self) -> str:
        n_layers, n_heads = self.shape
        first = next(iter(self.scores))
        top = ", ".join(
            f"{head_label(h)} {float(self.scores[first][h]):+.3f}" for h in self.strongest()
        )
        clean = ", ".join(f"{k} {v:.3f}" for k, v in self.clean.items())
        return (
            f"AblationResult({self.model_name!r}{source_label(self.source)}, {self.mode} "
            f"ablation, {n_layers}L x {n_heads}H, "
            f"{self.n_sequences} sequences; clean {clean}; strongest on {first}: {top})"
        )

    def _repr_html_(self) -> str:
        return (
            f"<p><b>AblationResult</b> ({self.mode}) for <code>{self.model_name}</code>; "
            f"clean: {', '.join(f'{k} {v:.3f}' for k, v in self.clean.items())}</p>"
            + self.html_table(["label", *(f"delta_{k}" for k in self.scores)])
        )
