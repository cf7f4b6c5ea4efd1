"""`DetectionResult` (what `inducthead.detect` returns) and the `Thresholds` behind its verdicts."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import Tensor

from inducthead.analysis.heads import Head, head_label, parse_heads
from inducthead.analysis.results import HeadTable, from_jsonable, html_heads, source_label


@dataclass(frozen=True)
class Thresholds:
    """Cut-offs for the verdicts, set from measurements (benchmarks/detect_thresholds.py; numbers
    in benchmarks/RESULTS.md, 2026-11-23, 2 CPU cores):

    - Untrained models (demo, Olsson-2L-small and a 3-layer LN/MLP architecture, 5 seeds each):
      prefix matching <= 0.033 (uniform attention), |empirical copying| <= 0.098,
      previous-token and duplicate-token <= 0.043.
    - Trained demo models (3 seeds): induction heads prefix-match >= 0.95 and copy >= 0.98; the
      layer-0 previous-token head scores >= 0.90. Along the shipped trajectory the best layer-1
      head crosses prefix matching 0.3 between steps 225 (0.13) and 250 (0.50).
    - The hand-built circuit's heads score 1.0 / ±1.0 where they should and ~0 elsewhere.

    Each default sits roughly 3-10x above the untrained maximum and far below trained heads, so a
    head passes once a clear minority of its attention (or copying preference) is structured.
    """

    prefix_matching: float = 0.3  # 9x the untrained max (0.033)
    copying: float = 0.3  # 3x the untrained max |copying_empirical| (0.098)
    previous_token: float = 0.4  # 9x the untrained max (0.043)
    duplicate_token: float = 0.4  # 9x the untrained max (0.043)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


class DetectionResult(HeadTable):
    """Per-head scores and verdicts from `detect`.

    Scores (`[n_layers, n_heads]` tensors in `.scores`): prefix_matching (minimum over probe
    periods), prefix_matching_p<period>, previous_token, duplicate_token, copying_empirical,
    copying_eigen, k_composition (with the strongest previous-token head of earlier layers).
    Verdicts: `.induction_heads`, `.anti_induction_heads`, `.previous_token_heads`,
    `.duplicate_token_heads`, each a list of `(layer, head)` sorted by strength.
    """

    title = "inducthead.detect"
    COLUMNS = (
        "label",
        "prefix_matching",
        "copying_empirical",
        "copying_eigen",
        "previous_token",
        "duplicate_token",
        "k_composition",
        "role",
    )  # the table the CLI prints

    def __init__(
        self, scores, thresholds, probe, model_name, k_composition_source, warnings, source=None
    ):
        self.source = source  # the checkpoint analysed: {"path", "step"}, when loaded from one
        self.scores = scores
        self.thresholds = thresholds
        self.probe = probe
        self.model_name = model_name
        self.k_composition_source = k_composition_source
        self.warnings = list(warnings)

    def _select(self, mask: Tensor, key: str) -> list[Head]:
        found = [Head(int(l), int(h)) for l, h in mask.nonzero().tolist()]
        return sorted(found, key=lambda x: -float(self.scores[key][x]))

    @property
    def induction_heads(self) -> list[Head]:
        """Prefix matching >= threshold on every probe period AND copying_empirical >= threshold."""
        t = self.thresholds
        s = self.scores
        return self._select(
            (s["prefix_matching"] >= t.prefix_matching) & (s["copying_empirical"] >= t.copying),
            "prefix_matching",
        )

    @property
    def anti_induction_heads(self) -> list[Head]:
        """Induction-like attention whose output suppresses the attended token."""
        t = self.thresholds
        s = self.scores
        return self._select(
            (s["prefix_matching"] >= t.prefix_matching) & (s["copying_empirical"] <= -t.copying),
            "prefix_matching",
        )

    @property
    def previous_token_heads(self) -> list[Head]:
        return self._select(
            self.scores["previous_token"] >= self.thresholds.previous_token, "previous_token"
        )

    @property
    def duplicate_token_heads(self) -> list[Head]:
        return self._select(
            self.scores["duplicate_token"] >= self.thresholds.duplicate_token, "duplicate_token"
        )

    def role(self, head: Head) -> str:
        """ "induction", "anti-induction", "previous-token", "duplicate-token" or ""."""
        for name, heads in (
            ("induction", self.induction_heads),
            ("anti-induction", self.anti_induction_heads),
            ("previous-token", self.previous_token_heads),
            ("duplicate-token", self.duplicate_token_heads),
        ):
            if tuple(head) in heads:
                return name
        return ""

    def extra_columns(self) -> dict[str, list]:
        roles = {h: self.role(h) for h in self.heads()}
        return {"role": [roles[h] for h in self.heads()]}

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict:
        return {
            "model": self.model_name,
            "source": self.source,
            "probe": self.probe,
            "thresholds": self.thresholds.to_dict(),
            "scores": self.scores,
            "k_composition_source": self.k_composition_source,
            "heads": {
                "induction": [head_label(h) for h in self.induction_heads],
                "anti_induction": [head_label(h) for h in self.anti_induction_heads],
                "previous_token": [head_label(h) for h in self.previous_token_heads],
                "duplicate_token": [head_label(h) for h in self.duplicate_token_heads],
            },
            "warnings": self.warnings,
        }

    @classmethod
    def from_dict(cls, d: dict) -> DetectionResult:
        sources = [_source(s) for s in d["k_composition_source"]]
        return cls(
            {k: from_jsonable(v) for k, v in d["scores"].items()},
            Thresholds(**d["thresholds"]),
            d["probe"],
            d["model"],
            sources,
            d.get("warnings", []),
            d.get("source"),
        )

    # ------------------------------------------------------------------ display
    KINDS = {"copying_empirical": "signed", "copying_eigen": "signed", "k_composition": "effect"}

    def colorbar_label(self, key: str) -> str:
        if key == "k_composition":
            return "K-composition - random baseline"
        return super().colorbar_label(key)

    def outlines(self, key: str) -> dict[str, list[Head]]:
        """The verdicts: induction heads (solid) and previous-token heads (dashed; an empty
        group draws nothing and has no legend entry)."""
        groups = {
            "induction head": self.induction_heads,
            "previous-token head": self.previous_token_heads,
        }
        return {
            f"{name}: {', '.join(map(head_label, heads))}": heads for name, heads in groups.items()
        }

    def plot(self, keys=None, **kwargs):
        """Heatmaps of the main scores (`HeadTable.plot`), the verdicts outlined."""
        keys = keys or [
            "prefix_matching",
            "copying_empirical",
            "previous_token",
            "duplicate_token",
            "copying_eigen",
            "k_composition",
        ]
        return super().plot(keys, **kwargs)

    def summary_lines(self) -> list[str]:
        def names(heads):
            return ", ".join(head_label(h) for h in heads) or "none"

        periods = self.probe.get("periods")
        return [
            f"induction heads: {names(self.induction_heads)}",
            f"anti-induction heads: {names(self.anti_induction_heads)}",
            f"previous-token heads: {names(self.previous_token_heads)}",
            f"duplicate-token heads: {names(self.duplicate_token_heads)}",
            f"(probe periods {periods}, thresholds {self.thresholds.to_dict()})",
        ]

    def table(self) -> str:
        """The per-head table as text (what the CLI prints)."""
        return self.to_dataframe()[list(self.COLUMNS)].to_string(
            index=False, float_format=lambda x: f"{x:.3f}"
        )

    def __str__(self) -> str:
        return "\n".join([repr(self), self.table(), *self.summary_lines()])

    def __repr__(self) -> str:
        n_layers, n_heads = self.shape
        top = (
            ", ".join(
                f"{head_label(h)} ({float(self.scores['prefix_matching'][h]):.2f})"
                for h in self.induction_heads
            )
            or "none"
        )
        return (
            f"DetectionResult({self.model_name!r}{source_label(self.source)}, {n_layers}L x "
            f"{n_heads}H; induction heads: "
            f"{top}; anti-induction: {len(self.anti_induction_heads)}, previous-token: "
            f"{len(self.previous_token_heads)}, duplicate-token: "
            f"{len(self.duplicate_token_heads)})"
        )

    def _repr_html_(self) -> str:
        parts = [
            f"<p><b>DetectionResult</b> for <code>{self.model_name}</code></p><p>",
            html_heads("induction heads", self.induction_heads),
            "<br>",
            html_heads("anti-induction heads", self.anti_induction_heads),
            "<br>",
            html_heads("previous-token heads", self.previous_token_heads),
            "<br>",
            html_heads("duplicate-token heads", self.duplicate_token_heads),
            "</p>",
            self.html_table(list(self.COLUMNS)),
        ]
        return "".join(parts)


def _source(value) -> Head | None:
    """A stored K-composition source: "L0H0", [0, 0] or None."""
    if value is None:
        return None
    return parse_heads([value])[0]


DetectionReport = DetectionResult  # the name earlier versions used
