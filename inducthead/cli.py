"""The `inducthead` command line: train, configs, demo.

Errors print as one line (`inducthead: error: ...`, exit 2) unless --debug is given; Ctrl-C during
training saves a checkpoint and exits 130.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

EXIT_ERROR, EXIT_INTERRUPTED = 2, 130


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, help="training steps (default: the preset's)")
    p.add_argument("--seed", type=int, help="seed for model init and data (default: the preset's)")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1, mps")
    p.add_argument("--batch-size", type=int, help="batch size (default: the preset's)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: the preset's)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--amp", action="store_true", default=None, help="bf16 autocast (CUDA)")
    p.add_argument(
        "--compile",
        nargs="?",
        const=True,
        default=None,
        metavar="BACKEND",
        help="torch.compile the model (hooks stay correct; backend default: inductor)",
    )
    p.add_argument("--cpu-threads", type=int, help="CPU threads, pinned (per torchrun process)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inducthead",
        description="Train, find and causally verify induction heads.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("train", help="train a preset into a run directory")
    p.add_argument("--config", required=True, help="preset name (see `inducthead configs`)")
    p.add_argument("--out", required=True, type=Path, help="run directory to write")
    _add_train_args(p)
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("configs", help="list the presets")
    p.add_argument("name", nargs="?", help="show one preset in full")
    p.set_defaults(func=cmd_configs)

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

    p = sub.add_parser("demo", help="train the demo model and show its induction head (CPU, ~30 s)")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="run directory (runs/demo)")
    _add_train_args(p)
    p.set_defaults(func=cmd_demo)
    from inducthead.sweep_cli import add_sweep_parser

    add_sweep_parser(sub)
    from inducthead.causal_cli import add_causal_parsers

    add_causal_parsers(sub)
    return parser


def _preset_and_config(args):
    from inducthead import configs

    preset = configs.get(args.config)
    if args.seed is not None:
        preset = preset.with_seed(args.seed)
    changes = {"progress": not args.no_progress}
    for arg, name in (
        ("steps", "steps"),
        ("batch_size", "batch_size"),
        ("lr", "lr"),
        ("device", "device"),
        ("amp", "amp"),
        ("compile", "compile"),
        ("cpu_threads", "cpu_threads"),
    ):
        if getattr(args, arg) is not None:
            changes[name] = getattr(args, arg)
    return preset, preset.train.replace(**changes)


def _train(args, preset, train_cfg, resume: bool, overwrite: bool):
    from inducthead import HookedTransformer, train

    model = HookedTransformer(preset.model)
    start = time.perf_counter()
    try:
        run = train(
            model, preset.make_task(), train_cfg, args.out, resume=resume, overwrite=overwrite
        )
    except KeyboardInterrupt:
        from inducthead import Run

        steps = Run(args.out).checkpoints if (args.out / "run.json").exists() else []
        where = f"checkpoint at step {steps[-1]} in {args.out}" if steps else "no checkpoint"
        print(
            f"inducthead: interrupted; {where}. Continue with: inducthead train --config "
            f"{preset.name} --out {args.out} --resume",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_INTERRUPTED) from None
    return run, time.perf_counter() - start


def cmd_train(args) -> int:
    preset, train_cfg = _preset_and_config(args)
    run, seconds = _train(args, preset, train_cfg, args.resume, args.overwrite)
    from inducthead.distributed import is_main_process  # torchrun: rank 0 reports

    if is_main_process():
        print(f"{run!r}\ntrained in {seconds:.1f} s; checkpoints in {args.out / 'checkpoints'}")
    return 0


def cmd_configs(args) -> int:
    from inducthead import configs

    if args.name is None:
        print(configs.table())
        return 0
    preset = configs.get(args.name)
    print(repr(preset))
    print(f"  {preset.description}\n  source: {preset.source}")
    for note in preset.notes:
        print(f"  note: {note}")
    print(
        f"  model: {preset.model.to_dict()}\n  task: {preset.task}\n"
        f"  train: {preset.train.to_dict()}"
    )
    return 0


def add_target_args(p: argparse.ArgumentParser) -> None:
    """TARGET / --pretrained / --step / --device: the model a command analyses (`load_target`)."""
    p.add_argument("target", nargs="?", type=Path, help="run directory or checkpoint file")
    p.add_argument("--pretrained", metavar="NAME_OR_PATH", help="Hugging Face name or directory")
    p.add_argument("--step", type=int, help="checkpoint step of a run directory (default: newest)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: where the model loads)")


def load_target(args):
    """The model named by a command's TARGET / --pretrained / --step arguments."""
    if (args.target is None) == (args.pretrained is None):
        raise ValueError(
            "give either a run directory / checkpoint file or --pretrained NAME_OR_PATH."
        )
    if args.pretrained is not None:
        from inducthead.pretrained import load_pretrained

        return load_pretrained(args.pretrained, device=args.device)
    from inducthead import load

    if not args.target.exists():
        raise FileNotFoundError(f"{args.target} does not exist.")
    return load(args.target, step=args.step, device=args.device)


def cmd_detect(args) -> int:
    from inducthead.detect import detect

    report = detect(load_target(args), period=args.period, n_samples=args.samples, seed=args.seed)
    print(report.table())
    print()
    print("\n".join(report.summary_lines()))
    for note in report.warnings:
        print(f"note: {note}")
    if args.json is not None:
        report.to_json(args.json)
        print(f"report written to {args.json}")
    return 0


def cmd_demo(args) -> int:
    import json

    from inducthead import demo

    args.config = "demo"
    preset, train_cfg = _preset_and_config(args)
    run_json = args.out / "run.json"
    # Re-running the demo replaces an earlier demo run; anything else in --out is left alone.
    overwrite = (
        run_json.is_file() and json.loads(run_json.read_text())["model"]["model_name"] == "demo"
    )
    run, seconds = _train(args, preset, train_cfg, resume=False, overwrite=overwrite)
    print(demo.summary(run.model, preset.make_task(), seconds, args.out))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
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
