"""circuitsvis views that work offline.

circuitsvis's own `RenderedHTML` prints HTML that imports its JavaScript from a CDN (blank
offline), and its notebook display opens a connection to google.com on every render to decide
between the CDN and the bundled copy. The views here never do either: every page and notebook
output carries the JavaScript bundled in the circuitsvis wheel (`dist/cdn/iife.js`) inline, and
nothing is fetched from any URL, at render time or in the browser. Only circuitsvis's prop
conversion is used; its `render` is bypassed (it also rebuilds the JS with yarn when it finds a
source checkout beside the package).

- `View`: the base of every view: `_repr_html_()` (Jupyter), `fragment()`, `to_html()`, `save()`;
- `page(views)`: one HTML document holding several views, with the bundle included once;
- `bundle_script()`: the bundle as a classic `<script>` (defines `window.CircuitsVis`), for pages
  that place `view.fragment(include_js=False)` after it.
"""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

__all__ = ["View", "page", "bundle_js", "bundle_script", "OFFLINE_CSP"]

# For full documents: the browser itself then refuses to load anything from any URL (inline
# scripts, styles and data: images only). The views render the same under it (checked in
# headless Chromium).
OFFLINE_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src data:; font-src data:"
)

_SOURCE_MAP = re.compile(r"^//# sourceMappingURL=.*$", re.MULTILINE)


@lru_cache(maxsize=1)
def bundle_js() -> str:
    """The circuitsvis JavaScript bundle shipped in the wheel, safe to inline in a `<script>`."""
    import circuitsvis

    path = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RuntimeError(
            f"circuitsvis has no bundled JavaScript at {path}; reinstall it "
            "(pip install --force-reinstall circuitsvis)."
        ) from None
    # the source map is a separate file a browser's devtools would request: drop the reference
    text = _SOURCE_MAP.sub("", text)
    # "</script" would end the inline script early; "<\/script" means the same inside JS strings
    return text.replace("</script", "<\\/script")


def bundle_script() -> str:
    """`<script>` defining `window.CircuitsVis`, for a page of `fragment(include_js=False)`s."""
    return f"<script>\n{bundle_js()}\n</script>"


def _props_json(props: dict) -> str:
    """circuitsvis's props conversion (tensors and arrays to lists, None dropped), with '<'
    escaped: it only occurs inside JSON strings, where `\\u003c` reads the same, so a label such
    as "</script>" cannot end the script."""
    from circuitsvis.utils.convert_props import convert_props

    return convert_props(props).replace("<", "\\u003c")


class View:
    """A circuitsvis component with its data; subclasses set `component` and `props()`.

    >>> view                 # a readable summary; in Jupyter the interactive view
    >>> view.save("attention.html")   # a complete HTML file that works offline
    """

    component: ClassVar[str]

    def props(self) -> dict:
        """The component's props (circuitsvis's camelCase names)."""
        raise NotImplementedError

    @property
    def title(self) -> str:
        """One line saying what the view shows."""
        return type(self).__name__

    def fragment(self, include_js: bool = True) -> str:
        """An HTML fragment (a `<div>` and the `<script>` rendering into it). With
        `include_js=False` it expects `bundle_script()` earlier on the page (as `page` does)."""
        uid = "circuits-vis-" + uuid.uuid4().hex[:12]
        props = _props_json(self.props())
        call = f'CircuitsVis.render("{uid}", CircuitsVis.{self.component}, {props});'
        # a module script keeps the inlined bundle's `CircuitsVis` out of the notebook's globals
        js = f"{bundle_js()}\n{call}" if include_js else call
        div = f'<div id="{uid}" style="margin: 15px 0;"></div>'
        return f'{div}\n<script type="module">\n{js}\n</script>'

    def _repr_html_(self) -> str:
        return self.fragment()

    def to_html(self) -> str:
        """A complete, self-contained HTML document showing this view."""
        return page([self], title=self.title)

    def save(self, path: str | Path) -> Path:
        """Write `to_html()` to `path` (UTF-8) and return the path."""
        path = Path(path)
        path.write_text(self.to_html(), encoding="utf-8")
        return path


def page(views: Iterable[View], title: str = "inducthead") -> str:
    """One self-contained HTML document: each view under a heading with its title, the
    circuitsvis bundle included once, and a Content-Security-Policy (`OFFLINE_CSP`) that keeps
    the browser from loading anything from a URL."""
    views = list(views)
    if not all(isinstance(v, View) for v in views):
        raise TypeError("page() takes inducthead.viz views (attention(...), ...).")
    body = "\n".join(
        f"<h2>{html.escape(v.title)}</h2>\n{v.fragment(include_js=False)}" for v in views
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{OFFLINE_CSP}">\n'
        f"<title>{html.escape(title)}</title>\n"
        "<style>body { font-family: sans-serif; margin: 2em; } h2 { font-size: 1.1em; }</style>\n"
        f"{bundle_script()}\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )
