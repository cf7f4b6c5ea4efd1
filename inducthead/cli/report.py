"""`inducthead report RUN_DIR [-o FILE]`: write the self-contained HTML report of a run (summary,
curves, head scores and verdicts, verification, dynamics, attention views) and print its path."""

from __future__ import annotations

from pathlib import Path

from inducthead.report import REPORT_NAME, build_report


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "report",
        help="write a run's self-contained HTML report (figures, verdicts, attention views)",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("run", type=Path, help="run directory")
    p.add_argument(
        "-o", "--out", type=Path, help=f"HTML file to write (default: RUN_DIR/{REPORT_NAME})"
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    path = build_report(args.run, args.out, progress=not args.no_progress)
    print(path)
    return 0
