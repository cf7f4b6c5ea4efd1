"""`inducthead sweep`: the command-line front of `inducthead.sweep`."""

from __future__ import annotations

import argparse
from pathlib import Path

from inducthead import sweep


def add_parsers(subparsers) -> None:
    """Register `inducthead sweep` on the CLI's subparsers."""
    p = subparsers.add_parser(
        "sweep",
        help="run a grid of runs (presets x parameters x seeds) and tabulate emergence",
        description=sweep.__doc__.split("\n\n")[0],
    )
    p.add_argument("spec", type=Path, help="sweep spec (.json, or .yaml with PyYAML)")
    p.add_argument("--out", type=Path, help="sweep directory (default: the spec's `out`)")
    p.add_argument("--backend", choices=("local", "ray"), default="local")
    p.add_argument("--address", help="Ray cluster address (default: start a local cluster)")
    p.add_argument("--retries", type=int, help="extra attempts per failed cell (default 1)")
    p.add_argument("--cpus-per-cell", type=float, default=1, help="Ray CPUs per cell (1)")
    p.add_argument("--gpus-per-cell", type=float, default=0, help="Ray GPUs per cell (0)")
    p.add_argument("--ray-cpus", type=int, help="CPUs of the local Ray cluster (default: all)")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    if (args.address or args.ray_cpus) and args.backend != "ray":
        raise sweep.SweepError("--address and --ray-cpus apply to --backend ray.")
    if args.address and args.ray_cpus:
        raise sweep.SweepError(
            "--ray-cpus sizes a local Ray cluster; an existing one (--address) has its own."
        )
    result = sweep.run_sweep(
        args.spec,
        args.out,
        backend=args.backend,
        address=args.address,
        retries=args.retries,
        cpus_per_cell=args.cpus_per_cell,
        gpus_per_cell=args.gpus_per_cell,
        ray_cpus=args.ray_cpus,
    )
    print(result.table())
    print(f"results: {result.path / 'results.csv'}")
    return 1 if result.failed else 0
