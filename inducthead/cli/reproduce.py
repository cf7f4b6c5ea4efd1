"""`inducthead reproduce PAPER [--full] [--out DIR] [--backend ray] [--runs R,..]`: run a paper
reproduction,
print the claim table (claim | paper | ours | status) and write metrics.json and figure.png to
DIR."""

from __future__ import annotations

from pathlib import Path

PAPERS = ("musat", "chen", "wang", "olsson")


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "reproduce",
        help="reproduce a paper's headline claims (quick: minutes on a CPU; --full: paper scale)",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("paper", choices=PAPERS, help="which paper")
    p.add_argument("--full", action="store_true", help="paper-scale settings (GPU when present)")
    p.add_argument("--out", type=Path, help="write metrics.json and figure.png here")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda for --full when present)")
    p.add_argument(
        "--seeds", help="comma-separated seeds (default: musat 0,1,2; chen the authors' 2024)"
    )
    p.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="where the N sweep's groups run (ray: Ray tasks; pip install 'inducthead[ray]')",
    )
    p.add_argument(
        "--runs",
        help="chen: which trainings, comma-separated from joint,staged,full_model (joint is "
        "always run); olsson: which runs from 1l,2l,3l,smeared_1l,smeared_2l (1l always); "
        "default: all",
    )
    p.add_argument("--ray-address", help="an existing Ray cluster (default: start a local one)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(func=cmd_reproduce)


def cmd_reproduce(args) -> int:
    default = {"musat": "0,1,2", "chen": "2024", "wang": "0", "olsson": "0"}[args.paper]
    text = args.seeds if args.seeds is not None else default
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers, got {text!r}.") from None
    mode = "full" if args.full else "quick"
    common = dict(out_dir=args.out, device=args.device, seeds=seeds, progress=not args.no_progress)
    if args.runs is not None:
        if args.paper not in ("chen", "olsson"):
            raise ValueError(f"--runs applies to chen and olsson, not {args.paper}.")
        named = [r.strip() for r in args.runs.split(",") if r.strip()]
        first = "joint" if args.paper == "chen" else "1l"  # always run, first
        common["runs"] = tuple(dict.fromkeys([first, *named]))
    if args.paper == "musat":
        from inducthead.papers import musat

        result = musat.reproduce(mode, backend=args.backend, ray_address=args.ray_address, **common)
    else:
        if args.backend != "local":
            raise ValueError(
                f"--backend applies to musat's N sweep only; {args.paper} runs in-process."
            )
        from importlib import import_module

        result = import_module(f"inducthead.papers.{args.paper}").reproduce(mode, **common)
    print(result)  # the one-line summary and the claim table
    if args.out:
        print(f"wrote {args.out / 'metrics.json'} and {args.out / 'figure.png'}")
    return 0
