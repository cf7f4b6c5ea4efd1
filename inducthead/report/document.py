"""The structured report: `RunReport` holds `Section`s of `Block`s (text, tables, inline figures,
interactive views) and the lines saying what is missing; `report.html.render` turns it into one
HTML file. Tests read this structure; users get the file."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from pathlib import Path

# Block kinds: "text" (a paragraph, escaped), "pre" (preformatted text, escaped), "table" (HTML
# made here from a DataFrame), "figure" (PNG bytes shown inline as base64), "html" (a
# self-contained fragment from inducthead.viz: it carries its own scripts, never a URL).
KINDS = ("text", "pre", "table", "figure", "html")


@dataclass
class Block:
    kind: str
    content: str | bytes
    title: str = ""
    caption: str = ""
    side: bool = False  # a small table: laid out beside its neighbours
    folded: bool = False  # shown closed (<details>): long text few readers need

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"block kind must be one of {KINDS}, got {self.kind!r}.")

    def __repr__(self) -> str:
        size = f"{len(self.content):,} {'bytes' if isinstance(self.content, bytes) else 'chars'}"
        return f"Block({self.kind}{', ' + repr(self.title) if self.title else ''}, {size})"


@dataclass
class Section:
    """One part of the report (`key` is its HTML anchor: report.html#attention)."""

    key: str
    title: str
    blocks: list[Block] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # shown as visible lines, never hidden
    notes: list[str] = field(default_factory=list)  # warnings raised while computing it

    def text(self, content: str, title: str = "") -> None:
        self.blocks.append(Block("text", content, title))

    def pre(self, content: str, title: str = "", folded: bool = False) -> None:
        self.blocks.append(Block("pre", content, title, folded=folded))

    def table(self, df, title: str = "", float_format: str = "%.3f", side: bool = False) -> None:
        """A pandas DataFrame as an HTML table (values escaped by pandas); `side`: small,
        laid out beside the tables next to it."""
        html = df.to_html(index=False, float_format=lambda x: float_format % x, na_rep="–")
        self.blocks.append(Block("table", html, title, side=side))

    def figure(self, fig, title: str = "", caption: str = "", dpi: int = 100) -> None:
        """A matplotlib figure as inline PNG; the figure is closed (freed) afterwards."""
        self.blocks.append(Block("figure", figure_png(fig, dpi), title, caption))

    def html(self, fragment: str, title: str = "", caption: str = "") -> None:
        self.blocks.append(Block("html", fragment, title, caption))

    def kinds(self) -> list[str]:
        return [b.kind for b in self.blocks]

    def __repr__(self) -> str:
        missing = f", {len(self.missing)} missing" if self.missing else ""
        return f"Section({self.key!r}: {', '.join(self.kinds()) or 'empty'}{missing})"


@dataclass
class RunReport:
    """Everything the report of one run shows (`inducthead.report.collect_report`)."""

    run_dir: Path
    title: str
    sections: list[Section]
    summary: str = ""  # the run's one-line repr

    def section(self, key: str) -> Section:
        for s in self.sections:
            if s.key == key:
                return s
        raise KeyError(f"no section {key!r}; sections: {[s.key for s in self.sections]}.")

    @property
    def missing(self) -> list[str]:
        """Every 'missing' line, prefixed with its section's title."""
        return [f"{s.title}: {line}" for s in self.sections for line in s.missing]

    def to_html(self) -> str:
        from inducthead.report.html import render

        return render(self)

    def save(self, path: str | Path) -> Path:
        """Write the self-contained HTML file (parent folders created) and return its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_html(), encoding="utf-8")
        return path

    def __repr__(self) -> str:
        missing = f"; {len(self.missing)} missing" if self.missing else "; complete"
        keys = ", ".join(s.key for s in self.sections)
        return f"RunReport({str(self.run_dir)!r}: {keys}{missing})"


def figure_png(fig, dpi: int = 100) -> bytes:
    """PNG bytes of a matplotlib figure (every inducthead `plot()` returns one pyplot does not
    manage, so there is nothing to close)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
