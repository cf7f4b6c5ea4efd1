"""The self-contained HTML report of a run (`inducthead report RUN_DIR -o report.html`).

>>> path = inducthead.report.build_report("runs/demo")        # RUN/report.html
>>> report = inducthead.report.collect_report("runs/demo")    # the sections, before any HTML
>>> report.missing                                            # what a half-written run lacks
"""

from inducthead.report.build import REPORT_NAME, build_report, collect_report, open_run
from inducthead.report.document import Block, RunReport, Section

__all__ = [
    "build_report",
    "collect_report",
    "open_run",
    "RunReport",
    "Section",
    "Block",
    "REPORT_NAME",
]
