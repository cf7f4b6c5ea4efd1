"""`CausalResult` (what `inducthead.verify` returns) and the `VerifyThresholds` behind its
verdicts."""

from __future__ import annotations

import html
import math
from dataclasses import asdict, dataclass

from inducthead.analysis.heads import Head, head_label, parse_heads
from inducthead.analysis.results import HeadTable, html_heads, nan_if_none, source_label
from inducthead.causal.scan import AblationResult


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
      Jointly (heads that share the job): the four redundant layer-1 heads of a trained
      LayerNorm/MLP/rotary 4x16 model open 0.003-0.022 each alone and 0.06-0.25 in their
      smallest jointly-passing sets (1.67 all together); the hand-built copy pair 0.010 alone,
      2.2 together; sets of heads that are not induction heads ablated together open <= 0.000
      (layer-0 heads but the previous-token one; demo L0H1; shortcut + one copy: -0.002). The
      same cut-off separates them: 2x below the smallest set, far above the non-induction sets.
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


_CHECKS = {
    "a": "ablation raises the loss toward the no-context baseline",
    "b": "much larger effect than ablating control heads",
    "c": "depends on previous-token heads through its key (K-composition)",
}


class CausalResult(HeadTable):
    """What `verify` measured, with per-head verdicts.

    `.confirmed`: candidate heads passing (a), (b) and (c); `.rows[head]`: every number for a
    candidate; `.scan`: the pattern-preserving `AblationResult` of every head alone; `.joint`: the
    joint ablation of all candidates and of the random control sets; `.baseline`: the no-context
    loss and accuracy. `.to_dataframe()`: one row per candidate; `.plot()`: ablation heatmaps
    with the confirmed heads outlined."""

    title = "inducthead.verify: pattern-preserving ablation (ablated - clean)"

    def __init__(
        self, rows, scan, baseline, joint, thresholds, model_name, n_sequences, shape, source=None
    ):
        self.source = source  # the checkpoint analysed: {"path", "step"}, when loaded from one
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

        shares_the_job = bool(r.get("redundant_with")) and ge(r["joint_share"], t.loss_share)
        return {
            "a": ge(r["loss_share"], t.loss_share) or shares_the_job,
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

    DEFAULT_KIND = "effect"

    def outlines(self, key: str) -> dict[str, list[Head]]:
        return {f"confirmed: {_names(self.confirmed)}": self.confirmed}

    def colorbar_label(self, key: str) -> str:
        return f"ablated - clean {key}"

    def plot_title(self) -> str:
        """The title, and the verdict on a line of its own ("no head confirmed" when none is)."""
        if self.confirmed:
            verdict = f"confirmed: {_names(self.confirmed)} (outlined)"
        elif self.rows:
            verdict = f"no head confirmed (candidates: {_names(self.candidates)})"
        else:
            verdict = "no head confirmed (no candidate heads)"
        return f"{self.title}\n{verdict}"

    def to_dict(self) -> dict:
        return {
            "model": self.model_name,
            "source": self.source,
            "n_sequences": self.n_sequences,
            "shape": list(self._shape),
            "clean": self.clean,
            "baseline": self.baseline,
            "thresholds": self.thresholds.to_dict(),
            "heads": {head_label(h): r | self.verdicts(h) for h, r in self.rows.items()},
            "joint": self.joint,
            "confirmed": [head_label(h) for h in self.confirmed],
            "ablation_effects": self.scores,
            "scan": self.scan.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> CausalResult:
        rows = {}
        for label, stored in d["heads"].items():
            row = {k: v for k, v in stored.items() if k not in ("a", "b", "c")}
            for key in ("controls", "senders", "redundant_with"):
                row[key] = parse_heads(row.get(key) or [])
            rows[Head.parse(label)] = {k: _number(v) for k, v in row.items()}
        joint = {k: _number(v) for k, v in d["joint"].items()}
        if "control_sets" in joint:
            joint["control_sets"] = [parse_heads(s) for s in joint["control_sets"]]
            joint["control_effects"] = [_number(e) for e in joint["control_effects"]]
        return cls(
            rows=rows,
            scan=AblationResult.from_dict(d["scan"]),
            baseline=d["baseline"],
            joint=joint,
            thresholds=VerifyThresholds(**d["thresholds"]),
            model_name=d["model"],
            n_sequences=d["n_sequences"],
            shape=tuple(d["shape"]),
            source=d.get("source"),
        )

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
            if r.get("redundant_with"):
                share += (
                    f"; jointly with {_names(r['redundant_with'])}: share "
                    f"{r['joint_share']:.3f} (the heads are redundant: they share the job)"
                )
            out.append(
                f"  (a) {mark['a']}  loss {r['loss_effect']:+.3f}, accuracy "
                f"{r['accuracy_effect']:+.3f}; {share}"
            )
            out.append(
                f"  (b) {mark['b']}  specificity {_num(r['specificity'], '.1f', 'x')} the largest "
                "control head"
                f" [{_names(r['controls'])}] ({r['control_effect']:+.4f}; >= "
                f"{self.thresholds.specificity})"
            )
            if r["senders"]:
                out.append(
                    f"  (c) {mark['c']}  prefix matching {r['attention_clean']:.3f} -> "
                    f"{r['attention_senders_ablated']:.3f} with {_names(r['senders'])} ablated "
                    f"(drop {r['prefix_drop']:.3f} >= {self.thresholds.prefix_drop}); restored "
                    f"via key {_num(r['key_recovery'], '.0%')} (>= "
                    f"{self.thresholds.key_recovery:.0%}), via query "
                    f"{_num(r['query_recovery'], '.0%')}"
                )
            else:
                out.append("  (c) fail  no previous-token head in an earlier layer")
        j = self.joint
        if j:
            controls = j["control_effects"]
            ctrl = f"max |control| {max(map(abs, controls)):.4f}" if controls else "no controls"
            out.append(
                f"all candidates ablated together: loss {j['loss_effect']:+.3f} "
                f"({_share(j['loss_share'])}), accuracy {j['accuracy_effect']:+.3f} "
                f"({_share(j['accuracy_share'])}); {len(controls)} control sets: {ctrl}"
            )
        out.append("confirmed: " + (", ".join(head_label(h) for h in self.confirmed) or "none"))
        return out

    def __repr__(self) -> str:
        n_layers, n_heads = self._shape
        names = ", ".join(head_label(h) for h in self.confirmed) or "none"
        tried = ", ".join(head_label(h) for h in self.rows) or "none"
        return (
            f"CausalResult({self.model_name!r}{source_label(self.source)}, {n_layers}L x "
            f"{n_heads}H; confirmed: {names} "
            f"(of {tried}); clean loss {self.clean['loss']:.3f}, baseline "
            f"{self.baseline['loss']:.3f})"
        )

    def __str__(self) -> str:
        return "\n".join([repr(self), *self.lines()])

    def _repr_html_(self) -> str:
        checks = "".join(f"<li>({k}) {html.escape(v)}</li>" for k, v in _CHECKS.items())
        table = "<p>no candidate heads</p>"
        if self.rows:
            table = self.to_dataframe().to_html(
                index=False, float_format=lambda x: f"{x:.3f}", na_rep="–"
            )
        return (
            f"<p><b>CausalResult</b> for <code>{html.escape(self.model_name)}</code></p><p>"
            + html_heads("confirmed", self.confirmed)
            + "</p><ul>"
            + checks
            + "</ul>"
            + table
        )


def _num(value: float, spec: str, unit: str = "") -> str:
    """`value` formatted, or "undefined" for NaN (a ratio of two zero effects)."""
    return "undefined" if math.isnan(value) else f"{value:{spec}}{unit}"


def _share(value: float) -> str:
    if math.isnan(value):
        return "no share: the model does not beat the no-context baseline"
    return f"share {value:.3f}"


def _names(heads) -> str:
    return ", ".join(head_label(h) for h in heads) or "none"


def _number(value):
    """A stored row value: None back to NaN, "inf" back to infinity, anything else as is."""
    return nan_if_none(value) if value is None or isinstance(value, str) else value


CausalReport = CausalResult  # the name earlier versions used
