"""Musat et al. 2025's N sweep: every (N, seed) cell in one batched gradient-flow computation
(`papers.musat.sweep.run(group="all")`, the 19 coordinates in Gram form) vs one cell at a time
(`group="cell"`), in one run, with the emergence-time slopes both ways (they must agree).

    python benchmarks/musat_sweep.py            # quick mode's sweep: N 2..24 x 3 seeds
    python benchmarks/musat_sweep.py --smoke    # N 2..4 x 2 seeds, print only (tests)
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import emit

from inducthead.papers.musat import sweep


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="toy size, print only")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    n_values = [2, 3, 4] if args.smoke else [2, 3, 4, 6, 8, 12, 16, 24]
    seeds = [0, 1] if args.smoke else [0, 1, 2]
    (tb, _), t_batched = timed(lambda: sweep.run(n_values, seeds, "all", progress=False))
    (tc, _), t_cells = timed(lambda: sweep.run(n_values, seeds, "cell", progress=False))
    fb, fc = sweep.fits(tb["rows"]), sweep.fits(tc["rows"])
    lines = [
        f"N {n_values} x seeds {seeds} ({len(n_values) * len(seeds)} cells), threads "
        f"{args.threads}, float64, coordinate step 1",
        "",
        "| computation | wall time (s) | loss slope, fixed D | loss slope, D = 2N+2 |",
        "|---|---|---|---|",
        f"| batched (one computation) | {t_batched:.1f} | {fb['loss']['fixed_D']['slope']:.3f} | "
        f"{fb['loss']['D_2N+2']['slope']:.3f} |",
        f"| one cell at a time | {t_cells:.1f} | {fc['loss']['fixed_D']['slope']:.3f} | "
        f"{fc['loss']['D_2N+2']['slope']:.3f} |",
        "",
        f"batched speedup: {t_cells / t_batched:.2f}x",
    ]
    emit(
        "Musat N sweep, batched vs one cell at a time (benchmarks/musat_sweep.py)",
        lines,
        save=not args.smoke,
    )


if __name__ == "__main__":
    main()
