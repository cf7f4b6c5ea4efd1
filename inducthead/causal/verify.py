"""`inducthead.verify(model)`: causal evidence that detected induction heads are induction heads.

For each candidate head (default: `detect(model).induction_heads`), on repeated-token data:

(a) pattern-preserving ablation of the head alone raises the loss on induction-predictable tokens
    by a share of the gap between the clean loss and the no-context baseline (the loss of the best
    predictor that ignores the context), or, for heads that share the job, the joint ablation of
    a smallest set of such heads (each failing alone) does: redundant heads are normal in real
    models, and are reported as such; the joint ablation of all candidates is reported too;
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

import itertools
import math
import random
import warnings

from inducthead.analysis.adapters import ModelAdapter
from inducthead.analysis.detect import detect_heads
from inducthead.analysis.heads import Head, check_heads
from inducthead.causal.ablation import Ablation
from inducthead.causal.data import Data, as_batch
from inducthead.causal.metrics import evaluate, no_context_baseline, resolve_metrics
from inducthead.causal.patching import patch_path
from inducthead.causal.scan import scan_heads
from inducthead.causal.verification import CausalResult, VerifyThresholds
from inducthead.tasks.probes import fit_probe

__all__ = ["verify", "CausalResult", "VerifyThresholds"]


def _control_pool(head: Head, excluded: set[Head], n_layers: int, n_heads: int) -> list[Head]:
    """Heads of the same layer not in `excluded`; if none, those of the nearest other layers."""
    layer = head[0]
    for distance in range(n_layers):
        pool = [
            Head(l, h)
            for l in sorted({layer - distance, layer + distance})
            if 0 <= l < n_layers
            for h in range(n_heads)
            if (l, h) not in excluded
        ]
        if pool:
            return pool
    return []


# Up to this many candidates failing (a) alone, every subset of them is tried jointly.
_MAX_SUBSET_SEARCH = 5
# Fewer sequences than this get a warning: the thresholds were measured on 64.
_FEW_SEQUENCES = 16
# Beyond this many one-head-per-pool combinations, control sets are drawn without listing them.
_MAX_LISTED = 100_000


def _control_sets(pools: list[list[Head]], n: int, seed: int) -> list[list[Head]]:
    """Up to `n` distinct sets with one head from each pool (no head twice in a set), drawn
    uniformly from all such sets (all of them when there are at most `n`). Beyond `_MAX_LISTED`
    combinations, one head per pool is drawn uniformly and repeats are rejected."""
    rng = random.Random(seed)
    if math.prod(len(p) for p in pools) <= _MAX_LISTED:
        valid = (c for c in itertools.product(*pools) if len(set(c)) == len(c))
        sets = list(dict.fromkeys(tuple(sorted(c)) for c in valid))
        return [list(c) for c in (sets if len(sets) <= n else rng.sample(sets, n))]
    found: dict[tuple[Head, ...], None] = {}
    for _ in range(100 * n):
        combo = [rng.choice(p) for p in pools]
        if len(set(combo)) == len(combo):
            found.setdefault(tuple(sorted(combo)), None)
        if len(found) == n:
            break
    return [list(c) for c in found]


def verify(
    model,
    heads=None,
    data: Data = None,
    *,
    thresholds: VerifyThresholds | None = None,
    n_controls: int = 8,
    seed: int = 0,
    detection=None,
    period: int = 25,
    repeats: int = 4,
) -> CausalResult:
    """Causally check the candidate induction heads of `model` (default: `detect(model)`'s
    induction heads); see the module docstring for checks (a)-(c). `data`: a `Batch`, token ids or
    None (`causal.data.default_data`: 64 repeated-token sequences). `detection`: a
    `DetectionResult` to reuse (it supplies the previous-token heads and the heads kept out of the
    control pools); without one, `detect` runs with a probe of `period` x `repeats` fitted to the
    model's context and vocabulary. Works on our models, TransformerBridge and TransformerLens 3
    models."""
    adapter = ModelAdapter.wrap(model)
    adapter.check_finite()
    thresholds = thresholds or VerifyThresholds()
    candidates = None if heads is None else check_heads(heads, adapter, allow_empty=True)
    batch = as_batch(adapter, data)
    if len(batch) < _FEW_SEQUENCES:
        warnings.warn(
            f"verify on {len(batch)} sequence(s): its thresholds were set on 64; below "
            f"{_FEW_SEQUENCES} the ablation effects are noisy and verdicts unreliable.",
            stacklevel=2,
        )
    if detection is None:  # detect's default probe (period 25 x 4), fitted to small models
        bos = adapter.bos_token_id is not None
        fitted = fit_probe(adapter.n_ctx, adapter.d_vocab, bos, period, repeats, fit_vocab=True)
        detection = detect_heads(adapter, period=fitted[0], repeats=fitted[1])
    if candidates is None:
        candidates = list(detection.induction_heads)
    metrics = resolve_metrics(["loss", "accuracy"])
    baseline = no_context_baseline(batch)
    everyone = [Head(l, h) for l in range(adapter.n_layers) for h in range(adapter.n_heads)]
    scan = scan_heads(adapter, batch, metrics, "pattern_preserving", heads=everyone)
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
            "controls": pool,
            "redundant_with": [],  # filled by _find_redundant_sets
            "joint_share": math.nan,
        }
        row.update(_k_composition(adapter, head, detection, batch))
        rows[head] = row

    if beats_baseline:
        _find_redundant_sets(adapter, batch, rows, clean["loss"], gap["loss"], thresholds)
    joint = {}
    if candidates:
        ablated = _ablated_metrics(adapter, batch, candidates, metrics)
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
        sets = _control_sets(pools, n_controls, seed) if all(pools) else []
        effects = [
            _ablated_metrics(adapter, batch, s, metrics)["loss"] - clean["loss"] for s in sets
        ]
        joint["control_sets"] = sets
        joint["control_effects"] = effects
        joint["specificity"] = _ratio(
            joint["loss_effect"], max((abs(e) for e in effects), default=math.nan)
        )
    return CausalResult(
        rows=rows,
        scan=scan,
        baseline=baseline,
        joint=joint,
        thresholds=thresholds,
        model_name=adapter.name,
        n_sequences=len(batch),
        shape=(L, H),
        source=adapter.source,
    )


def _ablated_metrics(adapter: ModelAdapter, batch, heads: list[Head], metrics) -> dict:
    """The metrics with `heads` ablated together, pattern-preserving."""
    ablation = Ablation(adapter, heads, "pattern_preserving")
    return evaluate(metrics, adapter.logits(batch.tokens, ablation.hooks_for(batch.tokens)), batch)


def _find_redundant_sets(adapter, batch, rows: dict, clean_loss: float, gap: float, t) -> None:
    """Check (a) for heads that share the job: among the candidates that fail (a) alone, the
    smallest sets whose joint ablation passes it (all subsets for up to `_MAX_SUBSET_SEARCH`
    such heads, else the whole group). Each member's row gets `redundant_with` (the other heads
    of its sets) and `joint_share` (the largest share of a set it is in)."""
    failing = [h for h, r in rows.items() if not r["loss_share"] >= t.loss_share]
    if len(failing) < 2:
        return
    if len(failing) <= _MAX_SUBSET_SEARCH:
        sizes = range(2, len(failing) + 1)
        subsets = [c for k in sizes for c in itertools.combinations(failing, k)]
    else:
        subsets = [tuple(failing)]
    loss = resolve_metrics("loss")
    passing: list[tuple[tuple[Head, ...], float]] = []
    for subset in subsets:
        if any(set(found) <= set(subset) for found, _ in passing):
            continue  # not minimal: a smaller set already does the job
        share = (_ablated_metrics(adapter, batch, list(subset), loss)["loss"] - clean_loss) / gap
        if share >= t.loss_share:
            passing.append((subset, share))
    for subset, share in passing:
        for head in subset:
            row = rows[head]
            others = [h for h in subset if h != head and h not in row["redundant_with"]]
            row["redundant_with"] = sorted(row["redundant_with"] + others)
            best = row["joint_share"]
            row["joint_share"] = share if math.isnan(best) else max(share, best)


def _ratio(effect: float, control: float) -> float:
    if math.isnan(control):
        return math.nan
    if control == 0:
        return math.inf if effect > 0 else math.nan
    return effect / control


def _k_composition(adapter: ModelAdapter, head: Head, detection, batch) -> dict:
    """(c): the previous-token heads of earlier layers, zero-ablated, and restored via k / q."""
    senders = [p for p in detection.previous_token_heads if p[0] < head[0]]
    out = {"senders": senders}
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
    loss = resolve_metrics("loss")
    via_k = patch_path(adapter, senders, head, "k", batch, loss)
    via_q = patch_path(adapter, senders, head, "q", batch, loss)
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
