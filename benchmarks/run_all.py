"""Run every benchmark script in benchmarks/ (`make bench`): each `*.py` here except this file
and the `_`-prefixed helpers, one after another in a fresh interpreter, so a script added later
(e.g. detect_speed.py) is picked up without editing anything. Each script appends its own rows
to benchmarks/RESULTS.md. Exit status 1 if any script failed.

    python benchmarks/run_all.py                 # all
    python benchmarks/run_all.py --only train_throughput multiseed
    python benchmarks/run_all.py --list
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def scripts() -> list[Path]:
    return sorted(
        p for p in HERE.glob("*.py") if not p.name.startswith("_") and p.name != Path(__file__).name
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these scripts")
    parser.add_argument("--skip", nargs="+", metavar="NAME", default=[], help="skip these")
    parser.add_argument("--list", action="store_true", help="list the scripts and exit")
    args = parser.parse_args()
    chosen = [
        p for p in scripts() if (not args.only or p.stem in args.only) and p.stem not in args.skip
    ]
    unknown = set(args.only or []) - {p.stem for p in scripts()}
    if unknown:
        parser.error(f"no benchmark named {sorted(unknown)}; have {[p.stem for p in scripts()]}")
    if args.list:
        print("\n".join(p.stem for p in chosen))
        return 0
    results = []
    for path in chosen:
        print(f"=== {path.name}", flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, str(path)], cwd=HERE.parent)
        results.append((path.name, code, time.perf_counter() - start))
    print("\n=== summary")
    for name, code, seconds in results:
        print(f"{'ok    ' if code == 0 else 'FAILED'} {name} ({seconds:.0f} s)")
    return int(any(code for _, code, _ in results))


if __name__ == "__main__":
    sys.exit(main())
