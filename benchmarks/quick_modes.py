"""Each paper reproduction's quick mode, timed in one run (goal: < 3 minutes each on the CPU),
with the claims it reproduced: `papers.<name>.reproduce("quick")` in this process, one after
the other, into a temporary folder (the committed results in assets/reproductions stay as
they are).

    python benchmarks/quick_modes.py                 # musat, chen, wang, olsson
    python benchmarks/quick_modes.py --only olsson   # some of them
    python benchmarks/quick_modes.py --smoke         # olsson on its 1-layer run only, print only
"""

from __future__ import annotations

import argparse
import tempfile
import time
from importlib import import_module
from pathlib import Path

import torch
from _common import emit

PAPERS = ("musat", "chen", "wang", "olsson")
GOAL_S = 180.0


def timed_quick(name: str, out_dir: Path, **kwargs) -> tuple[float, str]:
    """Wall seconds of one quick mode and its headline (`N/M claims reproduced`)."""
    paper = import_module(f"inducthead.papers.{name}")
    start = time.perf_counter()
    result = paper.reproduce("quick", out_dir=out_dir, progress=False, **kwargs)
    seconds = time.perf_counter() - start
    n = sum(result.status.get(c.key) == "reproduced" for c in result.paper)
    return seconds, f"{n}/{len(result.paper)} claims reproduced"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="olsson's 1-layer run only, print")
    parser.add_argument("--only", help="comma-separated papers (default: all four)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    papers = ["olsson"] if args.smoke else (args.only.split(",") if args.only else list(PAPERS))
    unknown = sorted(set(papers) - set(PAPERS))
    if unknown:
        parser.error(f"unknown paper(s) {unknown}; choose from {', '.join(PAPERS)}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in papers:
            extra = {"runs": ("1l",)} if args.smoke else {}
            seconds, claims = timed_quick(name, Path(tmp) / name, **extra)
            met = "yes" if seconds < GOAL_S else "NO"
            rows.append(f"| {name} | {seconds:.1f} | {met} | {claims} |")
    lines = [
        f"quick modes in one process, one after the other, torch threads {args.threads}"
        + (" (smoke: olsson's 1-layer run only)" if args.smoke else ""),
        "",
        f"| paper | wall time (s) | under {GOAL_S:.0f} s | result |",
        "|---|---|---|---|",
        *rows,
    ]
    emit(
        "Quick modes of the paper reproductions (benchmarks/quick_modes.py)",
        lines,
        save=not args.smoke,
    )


if __name__ == "__main__":
    main()
