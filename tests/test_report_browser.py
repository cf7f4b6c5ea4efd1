"""The HTML report in a real browser: headless Chromium (tests/browser.py; installed from
Debian packages by the test setup when missing) with the network disabled opens the report of
the shipped demo run; the figures and the interactive attention views must not be blank
(grey-level spread of their screenshots), no script may fail, and nothing may be requested
from anywhere but the file itself and its data: URIs. Negative controls run the same
measurements on a blank page of the same structure and on the report with JavaScript off."""

from __future__ import annotations

import base64
import io
import re

import pytest
from browser import Browser, install_browser, pixel_std
from report_cases import demo_report

# Grey-level standard deviation (0-255, 3 px in from the edges) below which an area counts as
# blank. Measured on the demo report (headless Chromium 156, 2026-12-02): figures 29-95,
# attention views 31-32; the blank page 0.0 (figure and view), the views with JavaScript off 0.0.
NOT_BLANK = 8.0
FIGURES = "figure img"
VIEWS = "#attention .view"
# A circuitsvis view has drawn when it holds its canvases and the zoomed pattern's heading.
VIEWS_DRAWN = (
    f"[...document.querySelectorAll('{VIEWS}')].every(v => v.querySelector('canvas') "
    "&& v.innerText.includes('Zoomed') && v.getBoundingClientRect().height > 300)"
)
# What would make a browser fetch from a URL (the bundle's own strings, such as React's error
# page address or XML namespaces, are never fetched; attributes and imports are).
EXTERNAL = re.compile(
    r"""(?:\b(?:src|href|action|poster|data)\s*=\s*["']?\s*(?:https?:)?//)"""
    r"""|(?:\bimport\b[^;\n]{0,200}?\bfrom\s*["'](?:https?:)?//)"""
    r"""|(?:\bimport\s*\(\s*["'](?:https?:)?//)"""
    r"""|(?:url\(\s*["']?\s*(?:https?:)?//)"""
    r"""|(?:@import\s+["'](?:https?:)?//)""",
    re.IGNORECASE,
)


@pytest.fixture(scope="module")
def chromium():
    path, why = install_browser()
    if path is None:
        pytest.skip(f"no headless browser: {why}")
    return path


@pytest.fixture(scope="module")
def report_file(tmp_path_factory):
    run, report, _ = demo_report(tmp_path_factory)
    return report.save(run / "report.html")


def blank_page(tmp_path) -> str:
    """The report's structure with nothing drawn: a white PNG as each figure, empty views."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (900, 300), "white").save(buf, format="PNG")
    img = f'<figure><img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'
    view = '<div class="view" style="height: 600px; border: 1px solid #eaeef2"></div>'
    page = f'<section id="heads">{img}</figure></section><section id="attention">{view}</section>'
    path = tmp_path / "blank.html"
    path.write_text(f"<!DOCTYPE html><html><body>{page}</body></html>")
    return path.as_uri()


def measure(browser: Browser, wait_for_views: bool) -> dict[str, list[float]]:
    drawn = browser.wait_for(VIEWS_DRAWN, timeout=60) if wait_for_views else False
    return {
        "figures": [pixel_std(s) for s in browser.element_screenshots(FIGURES, settle=0.2)],
        "views": [pixel_std(s) for s in browser.element_screenshots(VIEWS, settle=1.0)],
        "drawn": [float(drawn)],
    }


@pytest.mark.slow  # a browser and the demo run's report: ~30 s on 2 busy cores
def test_the_report_draws_its_figures_and_views_offline(chromium, report_file, tmp_path):
    with Browser(chromium, width=1280, height=1400) as browser:
        browser.open(report_file.as_uri())
        report = measure(browser, wait_for_views=True)
        errors = list(browser.errors)
        requests = list(browser.requests)
        browser.open(blank_page(tmp_path))
        blank = measure(browser, wait_for_views=False)
    with Browser(chromium, width=1280, height=1400, javascript=False) as browser:
        browser.open(report_file.as_uri())
        no_js = measure(browser, wait_for_views=False)
    print(f"grey-level std: report {report}, blank page {blank}, report without JS {no_js}")

    assert report["drawn"] == [1.0], "the attention views never finished drawing"
    assert len(report["figures"]) == 6 and min(report["figures"]) > NOT_BLANK
    assert len(report["views"]) == 2 and min(report["views"]) > NOT_BLANK
    assert errors == []
    assert requests and all(u.startswith(("file:", "data:")) for u in requests), [
        u[:80] for u in requests if not u.startswith(("file:", "data:"))
    ]
    # the controls: the same measurements see blank areas as blank ...
    assert len(blank["figures"]) == 1 and max(blank["figures"]) < NOT_BLANK
    assert len(blank["views"]) == 1 and max(blank["views"]) < NOT_BLANK
    # ... and the views' spread comes from the JavaScript drawing them, not the page around them
    assert min(no_js["figures"]) > NOT_BLANK and max(no_js["views"]) < NOT_BLANK


@pytest.mark.slow  # shares the demo run's report
def test_the_html_references_no_external_url(report_file):
    html = report_file.read_text()
    assert EXTERNAL.search(html) is None, EXTERNAL.search(html)
    assert 'http-equiv="Content-Security-Policy"' in html and "default-src 'none'" in html
    # every src= and href= in the document is a data: URI or an anchor in the page
    targets = re.findall(r"""\b(?:src|href)\s*=\s*["']([^"']*)""", html)
    assert targets and all(t.startswith(("data:", "#")) for t in targets), set(
        t[:40] for t in targets
    )
    # the pattern catches what it is meant to (so the first assertion can fail)
    for bad in (
        '<img src="https://example.org/a.png">',
        "<link href='//cdn.example.org/x.css'>",
        'import { a } from "https://unpkg.com/circuitsvis"',
        'import("http://x.org/m.js")',
        "background: url(https://x.org/i.png)",
        '@import "https://fonts.example.org/f.css"',
    ):
        assert EXTERNAL.search(bad), bad
