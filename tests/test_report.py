"""inducthead.report: the sections of a full run, half-written runs, paths that are no run
directory, stored results, and `inducthead report` / `inducthead demo` on the command line.
(The browser test of the HTML file is tests/test_report_browser.py.)"""

from __future__ import annotations

import base64
import json
import re

import pytest
from report_cases import demo_report, half_written

from inducthead.cli import main
from inducthead.report import REPORT_NAME, RunReport, build_report, collect_report
from inducthead.report import sections_run as sr
from inducthead.runs import RunDirError

KEYS = ["summary", "curves", "heads", "verify", "dynamics", "attention"]


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    return demo_report(tmp_path_factory)


def texts(section) -> str:
    return "\n".join(b.content for b in section.blocks if isinstance(b.content, str))


@pytest.mark.slow  # builds the demo run's report (~15 s), shared by the tests below
def test_a_full_run_has_every_section_and_nothing_missing(full):
    run, report, seconds = full
    print(f"report of the shipped demo run: {seconds:.1f} s")
    assert [s.key for s in report.sections] == KEYS
    assert report.missing == [] and repr(report).endswith("complete)")
    summary = texts(report.section("summary"))
    assert "finished" in summary and "3,276,800" in summary  # status, tokens at step 800
    assert "14 (steps 0-800)" in summary and "2.13.0+cpu" in summary  # checkpoints, versions
    assert report.section("curves").kinds() == ["figure"]
    heads = report.section("heads")
    assert "figure" in heads.kinds() and "table" in heads.kinds()
    assert "induction heads: L1H1, L1H0" in texts(heads)
    assert "previous-token heads: L0H0" in texts(heads)
    verify = report.section("verify")
    assert "L1H1: CONFIRMED" in texts(verify) and "L1H0: CONFIRMED" in texts(verify)
    assert verify.kinds().count("figure") == 1
    dynamics = report.section("dynamics")
    assert dynamics.kinds().count("figure") == 3  # head scores, loss + ICL, loss by position
    # the emergence table: prefix matching crosses 0.5 between checkpoints 250 and 275
    assert "250-275" in texts(dynamics) and "prefix_matching" in texts(dynamics)
    views = report.section("attention").blocks
    assert [b.kind for b in views] == ["html", "html"]
    # the induction heads first (the view zooms on the first), then the previous-token head
    assert all("L1H1, L1H0, L0H0" in b.title for b in views)
    assert all("CircuitsVis.render" in b.content for b in views)


@pytest.mark.slow  # shares the demo run's report
def test_figures_are_inline_png_and_the_document_is_one_file(full):
    _, report, _ = full
    figures = [b for s in report.sections for b in s.blocks if b.kind == "figure"]
    assert len(figures) == 6 and all(b.content[:8] == b"\x89PNG\r\n\x1a\n" for b in figures)
    html = report.to_html()
    sources = re.findall(r'<img[^>]* src="([^"]+)"', html)
    assert len(sources) == len(figures)
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert base64.b64decode(sources[0].split(",", 1)[1]) == figures[0].content
    assert html.count("Content-Security-Policy") == 1 and "default-src 'none'" in html
    # circuitsvis's bundle is inlined once, not once per view
    assert html.count("var CircuitsVis=") == 1
    for key in KEYS:
        assert f'<section id="{key}">' in html and f'href="#{key}"' in html


def test_half_written_run_without_checkpoints_reports_what_exists(tmp_path):
    run = half_written(tmp_path / "run", status="running", metrics_rows=5, cut_line=True)
    report = collect_report(run, progress=False)
    missing = "\n".join(report.missing)
    assert "status 'running'" in missing and "no checkpoint in checkpoints/ yet" in missing
    for key in ("heads", "verify", "attention"):
        assert report.section(key).missing == ["no intact checkpoint to load a model from"]
    assert report.section("dynamics").missing == [
        "training dynamics need at least two intact checkpoints; this run has 0"
    ]
    assert report.section("curves").kinds() == ["figure"]  # the 5 complete rows, drawn
    assert "evaluations (metrics.jsonl rows)" in texts(report.section("summary"))
    path = build_report(run, progress=False)  # default: inside the run
    assert path == run / REPORT_NAME
    html = path.read_text()
    assert html.count('class="missing"') == len(report.missing) + 1  # + the list at the top
    assert "Missing from this report (6)" in html


@pytest.mark.slow  # detect and verify on the CLI, then two reports (~20 s)
def test_missing_metrics_and_stored_results(tmp_path, capsys, one_cpu_thread):
    """Without metrics.jsonl: no curves, the rest from the checkpoints; detect.json and
    verify.json written by the CLI for the newest checkpoint are read, not recomputed."""
    run = half_written(tmp_path / "run", checkpoints=(0, 800))
    for cmd in ("detect", "verify"):
        assert main([cmd, str(run), "--json", str(run / f"{cmd}.json")]) == 0
    capsys.readouterr()
    report = collect_report(run, progress=False)
    assert report.section("summary").missing == [
        "metrics.jsonl is missing: no training curves (loss, head scores)"
    ]
    assert report.section("curves").missing == [
        "no rows in metrics.jsonl: no training curves to draw"
    ]
    assert "read from detect.json" in texts(report.section("heads"))
    assert "read from verify.json" in texts(report.section("verify"))
    assert "L1H0: CONFIRMED" in texts(report.section("verify"))
    assert report.section("dynamics").kinds().count("figure") == 3  # over the 2 checkpoints
    # a detect.json of another checkpoint is not used (verify.json still is)
    stale = json.loads((run / "detect.json").read_text())
    stale["source"]["step"] = 0
    (run / "detect.json").write_text(json.dumps(stale))
    again = collect_report(run, progress=False)
    assert "computed now" in texts(again.section("heads"))
    assert "read from verify.json" in texts(again.section("verify"))


def test_a_damaged_newest_checkpoint_is_named_and_the_older_one_used(tmp_path, one_cpu_thread):
    run = half_written(tmp_path / "run", metrics_rows=33, checkpoints=(0, 800), truncate=(800,))
    report = collect_report(run, progress=False)
    summary = report.section("summary").missing
    assert len(summary) == 1 and summary[0].startswith("checkpoint at step 800 is damaged")
    assert "Model: the checkpoint at step 0." in texts(report.section("heads"))
    assert "induction heads: none" in texts(report.section("heads"))  # step 0: untrained
    assert "No induction head was detected" in texts(report.section("verify"))
    assert report.section("dynamics").missing == [
        "training dynamics need at least two intact checkpoints; this run has 1"
    ]
    assert report.section("attention").kinds() == ["html", "html"]


def test_a_failing_section_becomes_a_missing_line(tmp_path, monkeypatch):
    def broken(section, run):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(sr, "curves_section", broken)
    report = collect_report(half_written(tmp_path / "run", metrics_rows=3), progress=False)
    assert report.section("curves").missing == [
        "could not be computed (RuntimeError: boom second line)"
    ]
    assert report.section("summary").kinds()[0] == "table"  # the rest is still there


@pytest.mark.parametrize("case", ["missing", "empty", "file", "bad json"])
def test_a_path_that_is_no_run_directory_is_refused_by_name(tmp_path, case):
    path = tmp_path / "x"
    if case == "empty":
        path.mkdir()
    elif case == "file":
        path.write_text("hello")
    elif case == "bad json":
        path.mkdir()
        (path / "run.json").write_text('{"model": ')
    with pytest.raises(RunDirError) as e:
        collect_report(path, progress=False)
    message = str(e.value)
    assert isinstance(e.value, ValueError) and str(path) in message
    assert "run.json" in message and "checkpoints/step_*.safetensors" in message


@pytest.mark.slow  # the whole report through the CLI (~15 s)
def test_cli_report_end_to_end(full, tmp_path, capsys, one_cpu_thread):
    run, _, _ = full
    out = tmp_path / "out" / "r.html"
    assert main(["report", str(run), "-o", str(out), "--no-progress"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out)
    html = out.read_text()
    assert "Missing from this report" not in html and "L1H1: CONFIRMED" in html
    assert main(["report", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err and "run.json" in err


@pytest.mark.slow  # trains 5 steps, then reports
def test_demo_ends_by_writing_the_report(tmp_path, capsys, one_cpu_thread):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps", "5", "--no-progress"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"report: {out / REPORT_NAME}" and (out / REPORT_NAME).is_file()
    assert '<section id="attention">' in (out / REPORT_NAME).read_text()


@pytest.mark.slow  # shares the demo run's report
def test_report_objects_read_well(full):
    _, report, _ = full
    assert isinstance(report, RunReport)
    assert repr(report.section("dynamics")) == (
        "Section('dynamics': text, figure, figure, figure, table)"
    )
    with pytest.raises(KeyError, match="no section 'nope'"):
        report.section("nope")
