"""`inducthead.verify(model)`: causal evidence that detected induction heads are induction heads.

For each candidate head (default: `detect(model).induction_heads`), on repeated-token data:

(a) pattern-preserving ablation of the head alone raises the loss on induction-predictable tokens
    by a share of the gap between the clean loss and the no-context baseline (the loss of the best
    predictor that ignores the context); the joint ablation of all candidates is reported too;
(b) ablating other heads instead (control heads of the same layer that `detect` does not call
    (anti-)induction heads; the nearest other layers when that layer has none) changes the loss
    much less: specificity = the head's loss effect / the largest |loss effect| of a control head,
    and for the whole set, the joint effect vs random control sets of equal size;
(c) zero-ablating the previous-token heads of earlier layers removes the head's prefix matching
    (its attention on induction targets), and path patching their clean output back into the
    head's KEY input alone restores it (K-composition), while the query path is a control.

A head is confirmed when (a), (b) and (c) all pass; thresholds in `VerifyThresholds`.
"""

from __future__ import annotations

import html
import itertools
import math
import random
from dataclasses import asdict, dataclass

from inducthead.analysis.adapters import ModelAdapter
from inducthead.analysis.detect import detect
from inducthead.analysis.heads import Head, check_heads, head_label
from inducthead.analysis.results import HeadTable, dump_json, html_heads
from inducthead.causal.ablation import Ablation, ablation_scan
from inducthead.causal.metrics import (
    Data,
    as_batch,
    evaluate,
    forward,
    no_context_baseline,
    resolve_metrics,
)
from inducthead.causal.patching import path_patch
from inducthead.tasks.probes import fit_probe

__all__ = ["verify", "CausalReport", "VerifyThresholds"]


@dataclass(frozen=True)
class VerifyThresholds:
    """Cut-offs for the per-head verdicts, set from measurements (benchmarks/verify_thresholds.py
    on 2 CPU cores; default data, 64 repeated-token sequences; the README's "Causal verification"
    section has the table). "Untrained": the demo and olsson-attn-only-2l-small presets, seeds 0-2,
    every layer-1 head; "trajectory": the shipped demo run (assets/demo), whose layer-1 heads
    become induction heads between steps 225 and 250.

    - loss_share (a): the demo's induction heads open 0.11-0.12 of the gap between the clean loss
      and the no-context baseline each at step 800 (a redundant pair: 1.07 jointly), 0.25-0.34 at
      step 250; the hand-built induction head 2.1. Heads that are not induction heads in trained
      models: |share| <= 0.002 (demo L0H0, L0H1), 0.011 (hand-built positional shortcut). Untrained
      models do not beat the baseline, so the share is undefined (NaN, the check fails). Cut-off
      0.03: 3x the largest non-induction value, a quarter of the smallest induction value.
    - specificity (b): untrained layer-1 heads score -4.4 to 1.8; the trajectory's heads 2.4-2.8
      at step 225 (still forming), 10-14 at step 250, 44-109 from step 300 on; hand-built: no
      control head has any effect (inf). Cut-off 5.
    - prefix_drop (c): zero-ablating the previous-token head removes <= 0.001 of untrained heads'
      prefix matching, 0.13-0.15 at step 225, 0.48-0.52 at step 250, 0.83-0.91 from step 400 on,
      0.95 in the hand-built model. Cut-off 0.3, `detect`'s prefix-matching threshold.
    - key_recovery (c): restoring the previous-token head into the key input alone restores
      1.01-1.03 of that drop from step 225 on (1.00 hand-built), the query path <= 0.001. Cut-off
      0.5: most of the dependence must run through the key. (Untrained values are ratios of
      ~0 / ~0 and meaningless; prefix_drop already fails there.)
    """

    loss_share: float = 0.03
    specificity: float = 5.0
    prefix_drop: float = 0.3
    key_recovery: float = 0.5

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _control_pool(head: Head, excluded: set[Head], n_layers: int, n_heads: int) -> list[Head]:
    """Heads of the same layer not in `excluded`; if none, those of the nearest other layers."""
    layer = head[0]
    for distance in range(n_layers):
        pool = [
            (l, h)
            for l in sorted({layer - distance, layer + distance})
            if 0 <= l < n_layers
            for h in range(n_heads)
            if (l, h) not in excluded
        ]
        if pool:
            return pool
    return []


def _control_sets(pools: list[list[Head]], n: int, seed: int) -> list[list[Head]]:
    """Up to `n` distinct sets with one head from each pool (no head twice in a set): all of them
    when there are at most `n`, else `n` drawn at random."""
    combos = []
    for combo in itertools.product(*pools):
        if len(set(combo)) == len(combo):
            combos.append(sorted(combo))
            if len(combos) > 10 * n:
                break
    unique = [list(c) for c in dict.fromkeys(tuple(c) for c in combos)]
    if len(unique) <= n:
        return unique
    return random.Random(seed).sample(unique, n)


def verify(
    model,
    heads=None,
    data: Data = None,
    *,
    thresholds: VerifyThresholds | None = None,
    n_controls: int = 8,
    seed: int = 0,
    detection=None,
) -> CausalReport:
    """Causally check the candidate induction heads of `model` (default: `detect(model)`'s
    induction heads); see the module docstring for checks (a)-(c). `data`: a `Batch`, token ids or
    None (`causal.metrics.default_data`: 64 repeated-token sequences). `detection`: a
    `DetectionReport` to reuse (it supplies the previous-token heads and the heads kept out of the
    control pools). Works on our models, TransformerBridge and TransformerLens 3 models."""
    adapter = ModelAdapter.wrap(model)
    adapter.check_finite()
    thresholds = thresholds or VerifyThresholds()
    candidates = None if heads is None else check_heads(heads, adapter, allow_empty=True)
    batch = as_batch(adapter, data)
    if detection is None:  # detect's default probe (period 25 x 4), fitted to small models
        bos = adapter.bos_token_id is not None
        period, repeats = fit_probe(adapter.n_ctx, adapter.d_vocab, bos, 25, 4, fit_vocab=True)
        detection = detect(adapter, period=period, repeats=repeats)
    if candidates is None:
        candidates = list(detection.induction_heads)
    metrics = resolve_metrics(["loss", "accuracy"])
    baseline = no_context_baseline(batch)
    scan = ablation_scan(adapter, batch, ["loss", "accuracy"], "pattern_preserving")
    clean = scan.clean
    gap = {k: abs(baseline[k] - clean[k]) for k in baseline}
    beats_baseline = clean["loss"] < baseline["loss"]
    L, H = adapter.n_layers, adapter.n_heads
    excluded = set(candidates) | set(detection.induction_heads)
    excluded |= set(detection.anti_induction_heads)
    rows: dict[Head, dict] = {}
    pools = []
    for head in candidates:
        pool = _control_pool(head, excluded, L, H)
        pools.append(pool)
        loss_effect = float(scan.scores["loss"][head])
        control = max((abs(float(scan.scores["loss"][c])) for c in pool), default=math.nan)
        row = {
            "loss_effect": loss_effect,
            "accuracy_effect": float(scan.scores["accuracy"][head]),
            "loss_share": loss_effect / gap["loss"] if beats_baseline else math.nan,
            "control_effect": control,
            "specificity": _ratio(loss_effect, control),
            "controls": ",".join(head_label(c) for c in pool),
        }
        row.update(_k_composition(adapter, head, detection, batch))
        rows[head] = row

    joint = {}
    if candidates:
        logits = forward(
            adapter,
            batch.tokens,
            Ablation(adapter, candidates, "pattern_preserving").hooks_for(batch.tokens),
        )
        ablated = evaluate(metrics, logits, batch)
        joint = {
            "loss_effect": ablated["loss"] - clean["loss"],
            "accuracy_effect": ablated["accuracy"] - clean["accuracy"],
            "loss_share": (ablated["loss"] - clean["loss"]) / gap["loss"]
            if beats_baseline
            else math.nan,
            "accuracy_share": (clean["accuracy"] - ablated["accuracy"]) / gap["accuracy"]
            if gap["accuracy"]
            else math.nan,
        }
        effects = []
        sets = _control_sets(pools, n_controls, seed) if all(pools) else []
        for control in sets:
            abl = Ablation(adapter, control, "pattern_preserving")
            logits = forward(adapter, batch.tokens, abl.hooks_for(batch.tokens))
            effects.append(evaluate(metrics, logits, batch)["loss"] - clean["loss"])
        joint["control_sets"] = [",".join(head_label(h) for h in s) for s in sets]
        joint["control_effects"] = effects
        joint["specificity"] = _ratio(
            joint["loss_effect"], max((abs(e) for e in effects), default=math.nan)
        )
    return CausalReport(
        rows=rows,
        scan=scan,
        baseline=baseline,
        joint=joint,
        thresholds=thresholds,
        model_name=adapter.name,
        n_sequences=len(batch),
        shape=(L, H),
    )


def _ratio(effect: float, control: float) -> float:
    if math.isnan(control):
        return math.nan
    if control == 0:
        return math.inf if effect > 0 else math.nan
    return effect / control


def _k_composition(adapter: ModelAdapter, head: Head, detection, batch) -> dict:
    """(c): the previous-token heads of earlier layers, zero-ablated, and restored via k / q."""
    senders = [p for p in detection.previous_token_heads if p[0] < head[0]]
    out = {"senders": ",".join(head_label(s) for s in senders)}
    if not senders:
        return out | {
            k: math.nan
            for k in (
                "attention_clean",
                "attention_senders_ablated",
                "attention_via_k",
                "attention_via_q",
                "prefix_drop",
                "key_recovery",
                "query_recovery",
            )
        }
    via_k = path_patch(adapter, senders, head, "k", batch, metric="loss")
    via_q = path_patch(adapter, senders, head, "q", batch, metric="loss")
    a = via_k.attention
    drop = a["clean"] - a["corrupted"]
    return out | {
        "attention_clean": a["clean"],
        "attention_senders_ablated": a["corrupted"],
        "attention_via_k": a["patched"],
        "attention_via_q": via_q.attention["patched"],
        "prefix_drop": drop,
        "key_recovery": via_k.attention_recovered,
        "query_recovery": via_q.attention_recovered,
        "senders_loss_effect": via_k.corrupted["loss"] - via_k.clean["loss"],
        "loss_recovered_via_k": via_k.recovered["loss"],
    }


_CHECKS = {
    "a": "ablation raises the loss toward the no-context baseline",
    "b": "much larger effect than ablating control heads",
    "c": "depends on previous-token heads through its key (K-composition)",
}


class CausalReport(HeadTable):
    """What `verify` measured, with per-head verdicts.

    `.confirmed`: candidate heads passing (a), (b) and (c); `.rows[head]`: every number for a
    candidate; `.scan`: the pattern-preserving `AblationResult` of every head alone; `.joint`: the
    joint ablation of all candidates and of the random control sets; `.baseline`: the no-context
    loss and accuracy. `.to_dataframe()`: one row per candidate; `.plot()`: ablation heatmaps
    with the confirmed heads outlined."""

    title = "inducthead.verify: pattern-preserving ablation (ablated - clean)"

    def __init__(self, rows, scan, baseline, joint, thresholds, model_name, n_sequences, shape):
        self.rows = rows
        self.scan = scan
        self.scores = scan.scores
        self.baseline = baseline
        self.joint = joint
        self.thresholds = thresholds
        self.model_name = model_name
        self.n_sequences = n_sequences
        self._shape = shape

    @property
    def clean(self) -> dict[str, float]:
        return self.scan.clean

    @property
    def candidates(self) -> list[Head]:
        return list(self.rows)

    def verdicts(self, head: Head) -> dict[str, bool]:
        r, t = self.rows[tuple(head)], self.thresholds

        def ge(x, cut):
            return not math.isnan(x) and x >= cut

        return {
            "a": ge(r["loss_share"], t.loss_share),
            "b": ge(r["specificity"], t.specificity),
            "c": ge(r["prefix_drop"], t.prefix_drop) and ge(r["key_recovery"], t.key_recovery),
        }

    @property
    def confirmed(self) -> list[Head]:
        return [h for h in self.rows if all(self.verdicts(h).values())]

    def to_dataframe(self):
        import pandas as pd

        records = []
        for head, row in self.rows.items():
            v = self.verdicts(head)
            records.append(
                {"label": head_label(head), "layer": head[0], "head": head[1]}
                | row
                | {k: v[k] for k in "abc"}
                | {"confirmed": all(v.values())}
            )
        columns = ["label", "layer", "head", "loss_effect", "accuracy_effect", "loss_share"]
        return pd.DataFrame(records, columns=None if records else columns)

    def plot(self, keys=None, **kwargs):
        return super().plot(keys, highlight=self.confirmed, **kwargs)

    def to_dict(self) -> dict:
        return {
            "model": self.model_name,
            "n_sequences": self.n_sequences,
            "clean": self.clean,
            "baseline": self.baseline,
            "thresholds": self.thresholds.to_dict(),
            "heads": {head_label(h): r | self.verdicts(h) for h, r in self.rows.items()},
            "joint": self.joint,
            "confirmed": [head_label(h) for h in self.confirmed],
            "ablation_effects": self.scores,
        }

    def to_json(self, path=None) -> str:
        return dump_json(self.to_dict(), path)

    def lines(self) -> list[str]:
        """The report as text (what the CLI prints)."""
        c, b = self.clean, self.baseline
        out = [
            f"{self.model_name}: {self.n_sequences} repeated-token sequences; clean loss "
            f"{c['loss']:.3f}, accuracy {c['accuracy']:.3f}; no-context baseline loss "
            f"{b['loss']:.3f}, accuracy {b['accuracy']:.3f}"
        ]
        if not self.rows:
            out.append("no candidate heads (detect found no induction heads).")
            return out
        for head, r in self.rows.items():
            v = self.verdicts(head)
            mark = {k: "PASS" if ok else "fail" for k, ok in v.items()}
            out.append(f"{head_label(head)}: {'CONFIRMED' if all(v.values()) else 'not confirmed'}")
            cut = self.thresholds.loss_share
            share = (
                f"share of the gap to baseline {r['loss_share']:.3f} (>= {cut})"
                if not math.isnan(r["loss_share"])
                else "no share: the model does not beat the no-context baseline"
            )
            out.append(
                f"  (a) {mark['a']}  loss {r['loss_effect']:+.3f}, accuracy "
                f"{r['accuracy_effect']:+.3f}; {share}"
            )
            out.append(
                f"  (b) {mark['b']}  specificity {r['specificity']:.1f}x the largest control head"
                f" [{r['controls'] or 'none'}] ({r['control_effect']:+.4f}; >= "
                f"{self.thresholds.specificity})"
            )
            if r["senders"]:
                out.append(
                    f"  (c) {mark['c']}  prefix matching {r['attention_clean']:.3f} -> "
                    f"{r['attention_senders_ablated']:.3f} with {r['senders']} ablated "
                    f"(drop {r['prefix_drop']:.3f} >= {self.thresholds.prefix_drop}); restored "
                    f"via key {r['key_recovery']:.0%} (>= {self.thresholds.key_recovery:.0%}), via "
                    f"query {r['query_recovery']:.0%}"
                )
            else:
                out.append("  (c) fail  no previous-token head in an earlier layer")
        j = self.joint
        if j:
            controls = j["control_effects"]
            ctrl = f"max |control| {max(map(abs, controls)):.4f}" if controls else "no controls"
            out.append(
                f"all candidates ablated together: loss {j['loss_effect']:+.3f} (share "
                f"{j['loss_share']:.3f}), accuracy {j['accuracy_effect']:+.3f} (share "
                f"{j['accuracy_share']:.3f}); {len(controls)} control sets: {ctrl}"
            )
        out.append("confirmed: " + (", ".join(head_label(h) for h in self.confirmed) or "none"))
        return out

    def __repr__(self) -> str:
        n_layers, n_heads = self._shape
        names = ", ".join(head_label(h) for h in self.confirmed) or "none"
        tried = ", ".join(head_label(h) for h in self.rows) or "none"
        return (
            f"CausalReport({self.model_name!r}, {n_layers}L x {n_heads}H; confirmed: {names} "
            f"(of {tried}); clean loss {self.clean['loss']:.3f}, baseline "
            f"{self.baseline['loss']:.3f})"
        )

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def _repr_html_(self) -> str:
        checks = "".join(f"<li>({k}) {html.escape(v)}</li>" for k, v in _CHECKS.items())
        table = "<p>no candidate heads</p>"
        if self.rows:
            table = self.to_dataframe().to_html(
                index=False, float_format=lambda x: f"{x:.3f}", na_rep="–"
            )
        return (
            f"<p><b>CausalReport</b> for <code>{html.escape(self.model_name)}</code></p><p>"
            + html_heads("confirmed", self.confirmed)
            + "</p><ul>"
            + checks
            + "</ul>"
            + table
        )
