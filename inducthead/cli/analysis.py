"""`inducthead detect`, `inducthead verify` and `inducthead ablate`: analyse a run, a checkpoint
or a pretrained model."""

from __future__ import annotations

import argparse
from pathlib import Path

from inducthead.analysis import detect, head_label
from inducthead.causal import ablate, verify
from inducthead.causal.ablation import MODES
from inducthead.causal.data import default_data, describe
from inducthead.causal.metrics import METRICS, evaluate, forward, no_context_baseline
from inducthead.cli.common import add_target_args, load_target


def _add_target_args(p: argparse.ArgumentParser) -> None:
    add_target_args(p)
    p.add_argument("--samples", type=int, default=64, help="repeated-token sequences (default 64)")
    p.add_argument("--seed", type=int, default=0, help="data seed (default 0)")


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "detect", help="find induction heads in a run, checkpoint or pretrained model"
    )
    add_target_args(p)
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the report as JSON")
    p.add_argument("--period", type=int, default=25, help="probe period (default 25)")
    p.add_argument(
        "--samples", type=int, default=10, help="probe sequences per period (default 10)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser(
        "verify", help="causally verify the induction heads of a run, checkpoint or model"
    )
    _add_target_args(p)
    p.add_argument("--heads", help="heads to verify, e.g. L1H0,L1H1 (default: detect's)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the report as JSON")
    p.add_argument("--period", type=int, default=25, help="detect's probe period (default 25)")
    p.add_argument("--repeats", type=int, default=4, help="detect's probe repeats (default 4)")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("ablate", help="ablate heads and print how each metric changes")
    _add_target_args(p)
    p.add_argument("--heads", required=True, help="heads to ablate together, e.g. L1H4,L1H6")
    p.add_argument("--mode", choices=MODES, default="zero", help="ablation (default: zero)")
    p.add_argument(
        "--period", type=int, default=40, help="longest period of the repeated-token data (40)"
    )
    p.set_defaults(func=cmd_ablate)


def cmd_detect(args) -> int:
    if args.samples < 1:
        raise ValueError(f"--samples must be >= 1, got {args.samples}.")
    report = detect(load_target(args), period=args.period, n_samples=args.samples, seed=args.seed)
    if report.source:
        print(f"checkpoint: {report.source['path']} (step {report.source['step']})")
    print(report.table())
    print()
    print("\n".join(report.summary_lines()))
    for note in report.warnings:
        print(f"note: {note}")
    if args.json is not None:
        report.to_json(args.json)
        print(f"report written to {args.json}")
    return 0


def _model_and_data(args, max_period: int = 40):
    if args.samples < 1:
        raise ValueError(f"--samples must be >= 1, got {args.samples}.")
    model = load_target(args)
    model.eval()
    data = default_data(model, n_samples=args.samples, seed=args.seed, max_period=max_period)
    return model, data


def cmd_verify(args) -> int:
    model, data = _model_and_data(args)
    report = verify(
        model, args.heads, data, seed=args.seed, period=args.period, repeats=args.repeats
    )
    print(report)
    if args.json is not None:
        report.to_json(args.json)
        print(f"report written to {args.json}")
    return 0


def cmd_ablate(args) -> int:
    model, data = _model_and_data(args, max_period=args.period)
    abl = ablate(model, args.heads, mode=args.mode)
    clean = evaluate(METRICS, forward(model, data.tokens), data)
    ablated = evaluate(METRICS, forward(model, data.tokens, abl.hooks_for(data.tokens)), data)
    heads = ", ".join(head_label(h) for h in abl.heads)
    print(f"ablating {heads} ({args.mode}) on {describe(data)} of repeated-token data")
    if abl.reference:
        print(f"mean over: {abl.reference}")
    print(f"{'metric':<12}{'clean':>10}{'ablated':>10}{'delta':>10}")
    for name in METRICS:
        delta = ablated[name] - clean[name]
        print(f"{name:<12}{clean[name]:>10.3f}{ablated[name]:>10.3f}{delta:>+10.3f}")
    base = no_context_baseline(data)
    print(f"no-context baseline: loss {base['loss']:.3f}, accuracy {base['accuracy']:.3f}")
    return 0
