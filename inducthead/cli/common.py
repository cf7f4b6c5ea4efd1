"""What several commands share: exit codes, training flags and the model a command analyses."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from inducthead import presets
from inducthead.model import HookedTransformer
from inducthead.recipe import resolve_device
from inducthead.runs import Run, load, load_pretrained
from inducthead.training import train

EXIT_ERROR, EXIT_INTERRUPTED = 2, 130


def add_train_args(p: argparse.ArgumentParser) -> None:
    """Flags that override a preset's training recipe (`train`, `demo`)."""
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


_TRAIN_FLAGS = ("steps", "batch_size", "lr", "device", "amp", "compile", "cpu_threads")


def preset_and_config(args):
    """The preset `--config` names, or the JSON config file it points to (reseeded by `--seed`),
    and its recipe with the flags."""
    spec = args.config
    preset = presets.from_file(spec) if presets.files.looks_like_file(spec) else presets.get(spec)
    if args.seed is not None:
        preset = preset.with_seed(args.seed)
    changes = {"progress": not args.no_progress}
    changes.update({k: getattr(args, k) for k in _TRAIN_FLAGS if getattr(args, k) is not None})
    return preset, preset.train.replace(**changes)


def train_preset(args, preset, train_cfg, resume: bool, overwrite: bool):
    """Train `preset` into `args.out`; Ctrl-C prints where the checkpoint is and exits 130."""
    model = HookedTransformer(preset.model)
    start = time.perf_counter()
    try:
        run = train(
            model,
            preset.make_task(),
            train_cfg,
            args.out,
            resume=resume,
            overwrite=overwrite,
            allow_schedule_change=getattr(args, "allow_schedule_change", False),
        )
    except KeyboardInterrupt:
        steps = Run(args.out).checkpoints if (args.out / "run.json").exists() else []
        where = f"checkpoint at step {steps[-1]} in {args.out}" if steps else "no checkpoint"
        print(
            f"inducthead: interrupted; {where}. Continue with: inducthead train --config "
            f"{args.config} --out {args.out} --resume",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_INTERRUPTED) from None
    return run, time.perf_counter() - start


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
    if args.device is not None:
        resolve_device(args.device)  # a clear error for a device this machine does not have
    if args.pretrained is not None:
        return load_pretrained(args.pretrained, device=args.device)
    if not args.target.exists():
        raise FileNotFoundError(f"{args.target} does not exist.")
    return load(args.target, step=args.step, device=args.device)
