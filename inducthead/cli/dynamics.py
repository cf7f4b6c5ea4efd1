"""`inducthead dynamics RUN_DIR [--llc]`: analyse every checkpoint of a run and write the
figures, a CSV and a JSON summary next to it (RUN_DIR/dynamics/ unless --out)."""

from __future__ import annotations

import json
from pathlib import Path

from inducthead.dynamics import Trajectory
from inducthead.runs import safe_child

FIGURES = (
    "head_scores",
    "loss_icl",
    "loss_by_position",
    "per_token_loss_pca",
    "weight_pca",
    "essential_dynamics",
    "progress_measures",
    "llc",
)


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "dynamics",
        help="training dynamics of a run over its checkpoints: head scores, ICL, PCA, emergence",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("run", type=Path, help="run directory")
    p.add_argument(
        "--llc", action="store_true", help="also estimate the LLC per checkpoint (devinterp)"
    )
    p.add_argument("--out", type=Path, help="output directory (default: RUN/dynamics)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument(
        "--strict", action="store_true", help="fail on a damaged checkpoint instead of skipping it"
    )
    p.add_argument("--no-verify", action="store_true", help="skip the checkpoint hash check")
    p.add_argument(
        "--no-cache", action="store_true", help="recompute everything (and cache nothing)"
    )
    p.set_defaults(func=cmd_dynamics)


def cmd_dynamics(args) -> int:
    if not args.run.exists():
        raise FileNotFoundError(f"{args.run} does not exist.")
    traj = Trajectory(
        args.run,
        strict=args.strict,
        verify=not args.no_verify,
        cache=not args.no_cache,
        progress=not args.no_progress,
    )
    out = args.out or safe_child(args.run, "dynamics", what="output folder")
    out.mkdir(parents=True, exist_ok=True)
    print(f"{traj!r}")
    traj.precompute(llc=args.llc)  # one pass over the checkpoints, with the progress bar
    results = {
        "head_scores": traj.head_scores(),
        "loss_icl": traj.phase_change(),
        "loss_by_position": traj.loss_by_position(),
        "per_token_loss_pca": traj.per_token_loss_pca(),
        "weight_pca": traj.weight_pca(),
        "essential_dynamics": traj.essential_dynamics(llc=args.llc),
    }
    if traj._progress_defined():
        results["progress_measures"] = traj.progress_measures()
    if args.llc:
        results["llc"] = traj.llc()
    emergence = {
        "prefix_matching": traj.emergence("prefix_matching", 0.5),
        "loss": traj.emergence(by="loss"),
    }
    stages = traj.stages(llc=args.llc)
    written = []
    for name, result in results.items():
        fig = result.plot()
        path = safe_child(out, f"{name}.png", what="figure name")
        fig.savefig(path, dpi=120)  # figures from plotstyle: no pyplot, no backend needed
        written.append(path)
    csv = safe_child(out, "head_scores.csv", what="table name")
    results["head_scores"].to_dataframe().to_csv(csv, index=False)
    curves = safe_child(out, "curves.csv", what="table name")
    results["loss_icl"].to_dataframe().to_csv(curves, index=False)
    summary = {
        "run": str(args.run),
        "steps": traj.steps,
        "skipped": traj.skipped + [(label, why) for label, why in traj.source.damaged],
        "phase_change": results["loss_icl"].to_dict(),
        "emergence": {k: v.to_dict() for k, v in emergence.items()},
        "stages": stages.to_dict(),
        "weight_pca": {k: v for k, v in results["weight_pca"].to_dict().items() if k != "tables"},
        "per_token_loss_pca": results["per_token_loss_pca"].explained_variance_ratio,
        "llc": results["llc"].to_dict() if args.llc else None,
        "cache": {
            "computed": dict(traj.cache_stats.computed),
            "reused": dict(traj.cache_stats.reused),
        },
    }
    from inducthead.analysis.results import dump_json

    summary_path = safe_child(out, "summary.json", what="summary name")
    dump_json(summary, summary_path)
    json.loads(summary_path.read_text())  # what we wrote is valid JSON
    print(results["loss_icl"])
    print()
    for e in emergence.values():
        print(repr(e))
    print()
    print(stages.data[["signal", "start", "end", "step"]].to_string(index=False))
    print(repr(stages))
    print(
        f"\nwrote {len(written)} figures, {csv.name}, {curves.name} and {summary_path.name} "
        f"to {out}"
    )
    return 0
