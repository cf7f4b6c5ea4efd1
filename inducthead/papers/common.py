"""The result every paper reproduction returns: our numbers beside the paper's claims.

`ReproductionResult` follows the result contract (`inducthead.analysis.results`): a one-line
`repr` (how many claims reproduced), `print` adds the claim table, `to_dataframe()` has one row
per claim (claim | paper | ours | status | source), `to_dict` / `from_dict` / `to_json` /
`from_json` round-trip, `plot()` draws the paper's headline figure, `write(dir)` saves
metrics.json and figure.png, `_repr_html_` for Jupyter. `add_hook_points` gives a paper's own
model its TL hooks.
`.metrics` holds our headline numbers, `.paper` the paper's claims (each with its section or
figure, and `provisional` where not read in the paper itself).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inducthead.analysis.results import Result

STATUSES = ("reproduced", "partly", "differs", "not run")


@dataclass
class Claim:
    """One claim: `key` (its metric), the paper's statement and where it is made."""

    key: str
    claim: str
    paper: str
    source: str
    provisional: bool = True

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class ReproductionResult(Result):
    """A paper reproduction's outcome: `metrics` (ours), `paper` (claims), `ours` and `status`
    per claim key, `curves` (what `plot` draws), `mode`, `wall_s`, `notes`."""

    paper_name: str
    mode: str
    metrics: dict[str, Any]
    paper: list[Claim]
    ours: dict[str, str]
    status: dict[str, str]
    curves: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        n = sum(self.status.get(c.key) == "reproduced" for c in self.paper)
        return (
            f"{type(self).__name__}({self.paper_name!r}, {self.mode}: {n}/{len(self.paper)} "
            f"claims reproduced, {self.wall_s:.0f} s)"
        )

    def to_dataframe(self):
        import pandas as pd

        rows = [
            {
                "claim": c.claim,
                "paper": c.paper,
                "ours": self.ours.get(c.key, "–"),
                "status": self.status.get(c.key, "not run"),
                "source": c.source + (" (provisional)" if c.provisional else ""),
            }
            for c in self.paper
        ]
        return pd.DataFrame(rows, columns=["claim", "paper", "ours", "status", "source"])

    def table(self) -> str:
        df = self.to_dataframe()
        return "\n".join(
            f"- {r.claim}: paper {r.paper} | ours {r.ours} | {r.status} [{r.source}]"
            for r in df.itertuples()
        )

    def to_dict(self) -> dict:
        return {
            "paper_name": self.paper_name,
            "mode": self.mode,
            "metrics": self.metrics,
            "paper": [c.to_dict() for c in self.paper],
            "ours": self.ours,
            "status": self.status,
            "curves": self.curves,
            "wall_s": self.wall_s,
            "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, d: dict):
        d = dict(d)
        d["paper"] = [Claim(**c) for c in d["paper"]]
        return cls(**d)

    def write(self, out_dir) -> None:
        """metrics.json (metrics, claims, ours, status; no curves) and figure.png in `out_dir`."""
        import json

        from inducthead.analysis.results import to_jsonable

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        d = self.to_dict()
        d.pop("curves")
        (out / "metrics.json").write_text(json.dumps(to_jsonable(d), indent=1))
        self.plot().savefig(out / "figure.png", dpi=80)


def add_hook_points(module, names) -> None:
    """Attach a TransformerLens `HookPoint` at each dotted name (`blocks.0.attn.hook_pattern`),
    creating empty parent modules on the way; call `module.setup()` afterwards."""
    from torch import nn
    from transformer_lens.hook_points import HookPoint

    for name in names:
        parent = module
        *path, leaf = name.split(".")
        for part in path:
            if not hasattr(parent, part):
                parent.add_module(part, nn.Module())
            parent = getattr(parent, part)
        parent.add_module(leaf, HookPoint())
