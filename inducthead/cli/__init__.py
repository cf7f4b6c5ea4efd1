"""The `inducthead` command line: one module per command group (`training`: train, configs;
`demo`; `analysis`: detect, verify, ablate; `sweep`; `dynamics`;
`reproduce`; `report`), assembled here.

Errors and warnings print as one line each (`inducthead: error: ...`, exit 2; `inducthead:
warning: ...`) unless --debug is given; Ctrl-C during training saves a checkpoint and exits 130.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from inducthead.cli import analysis, demo, dynamics, report, reproduce, sweep, training
from inducthead.cli.common import EXIT_ERROR, EXIT_INTERRUPTED

__all__ = ["main", "build_parser", "EXIT_ERROR", "EXIT_INTERRUPTED"]

COMMAND_GROUPS = (training, analysis, demo, sweep, dynamics, reproduce, report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inducthead",
        description="Train, find and causally verify induction heads.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for group in COMMAND_GROUPS:
        group.add_parsers(sub)
    return parser


def _warn_in_one_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"inducthead: warning: {' '.join(str(message).split())}", file=file or sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            if not args.debug:  # one line each, without Python's source-line echo
                warnings.showwarning = _warn_in_one_line
            return args.func(args)
    except SystemExit:
        raise
    except Exception as e:  # one line for users; --debug shows the traceback
        if args.debug:
            raise
        expected = isinstance(e, (ValueError, TypeError, OSError, RuntimeError))
        text = str(e) if expected else f"{type(e).__name__}: {e} (rerun with --debug for details)"
        print(f"inducthead: error: {' '.join(text.split())}", file=sys.stderr)  # one line
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
