"""`render(report)`: a `RunReport` as one self-contained HTML document. Styles are inline, figures
are base64 PNG data URIs and the interactive views run on circuitsvis's bundled JavaScript,
inlined once; a Content-Security-Policy (`viz.OFFLINE_CSP`) keeps the browser from loading
anything from a URL even if some part tried."""

from __future__ import annotations

import html
import time

from inducthead._version import __version__
from inducthead.report.document import Block, RunReport, Section, data_uri
from inducthead.viz import OFFLINE_CSP, bundle_script

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328;
       margin: 0; background: #fff; }
header { background: #24292f; color: #fff; padding: 14px 28px; }
header h1 { margin: 0; font-size: 20px; }
header p { margin: 4px 0 0; color: #d0d7de; font-family: ui-monospace, monospace; font-size: 12px; }
nav { position: sticky; top: 0; background: #f6f8fa; border-bottom: 1px solid #d0d7de;
      padding: 6px 28px; z-index: 10; }
nav a { margin-right: 16px; color: #0969da; text-decoration: none; }
main { padding: 0 28px 40px; max-width: 1200px; }
section { border-bottom: 1px solid #d0d7de; padding: 8px 0 18px; }
h2 { font-size: 18px; margin: 18px 0 8px; }
h3 { font-size: 14px; margin: 14px 0 6px; }
table { border-collapse: collapse; font-size: 12.5px; margin: 6px 0; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; text-align: right; }
th { background: #f6f8fa; }
td:first-child, th:first-child { text-align: left; }
pre { background: #f6f8fa; padding: 8px 10px; overflow-x: auto; font-size: 12px; }
figure { margin: 8px 0 14px; }
figure img { max-width: 100%; border: 1px solid #eaeef2; }
figcaption { color: #57606a; font-size: 12.5px; margin-top: 4px; }
.missing { background: #fff8c5; border-left: 4px solid #d4a72c; padding: 6px 10px; margin: 6px 0; }
.note { color: #57606a; font-size: 12.5px; }
[id], .view { scroll-margin-top: 40px; }  /* anchors land below the sticky nav */
.side { display: flex; flex-wrap: wrap; gap: 8px 28px; align-items: flex-start; }
details summary { cursor: pointer; font-weight: 600; margin: 10px 0 4px; }
.view { border: 1px solid #eaeef2; padding: 6px; margin: 6px 0 14px; }
"""


def _block(b: Block) -> str:
    title = f"<h3>{html.escape(b.title)}</h3>" if b.title else ""
    caption = f"<figcaption>{html.escape(b.caption)}</figcaption>" if b.caption else ""
    if b.kind == "text":
        return f"{title}<p>{html.escape(str(b.content))}</p>"
    if b.kind == "pre":
        pre = f"<pre>{html.escape(str(b.content))}</pre>"
        if b.folded:
            return f"<details><summary>{html.escape(b.title or 'details')}</summary>{pre}</details>"
        return f"{title}{pre}"
    if b.kind == "table":
        return f"{title}{b.content}"
    if b.kind == "figure":
        alt = html.escape(b.title or "figure", quote=True)
        return f'{title}<figure><img alt="{alt}" src="{data_uri(b.content)}">{caption}</figure>'
    # "html": a viz fragment, rendered by the bundle in the document's head
    return f'{title}<div class="view">{b.content}</div>{caption}'


def _section(s: Section) -> str:
    parts = [f'<section id="{s.key}"><h2>{html.escape(s.title)}</h2>']
    parts += [f'<p class="missing">{html.escape(line)}</p>' for line in s.missing]
    side: list[str] = []  # consecutive small tables, laid out in a row
    for b in s.blocks:
        if b.side:
            side.append(f"<div>{_block(b)}</div>")
            continue
        if side:
            parts.append(f'<div class="side">{"".join(side)}</div>')
            side = []
        parts.append(_block(b))
    if side:
        parts.append(f'<div class="side">{"".join(side)}</div>')
    parts += [f'<p class="note">note: {html.escape(n)}</p>' for n in s.notes]
    parts.append("</section>")
    return "\n".join(parts)


def render(report: RunReport) -> str:
    """The whole document (UTF-8 text)."""
    nav = " ".join(f'<a href="#{s.key}">{html.escape(s.title)}</a>' for s in report.sections)
    missing = report.missing
    overview = ""
    if missing:
        items = "".join(f"<li>{html.escape(line)}</li>" for line in missing)
        overview = (
            f'<div class="missing" id="missing"><b>Missing from this report ({len(missing)})'
            f"</b><ul>{items}</ul></div>"
        )
    made = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    views = any(b.kind == "html" for s in report.sections for b in s.blocks)
    body = "\n".join(_section(s) for s in report.sections)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{OFFLINE_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(report.title)}</title><style>{CSS}</style>\n"
        f"{bundle_script() if views else ''}\n</head>\n<body>\n"
        f"<header><h1>{html.escape(report.title)}</h1>"
        f"<p>{html.escape(report.summary)}</p>"
        f"<p>written {html.escape(made)} by inducthead {html.escape(__version__)}</p></header>\n"
        f"<nav>{nav}</nav>\n<main>\n{overview}\n{body}\n</main>\n</body></html>\n"
    )
