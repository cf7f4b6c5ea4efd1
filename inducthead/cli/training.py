"""`inducthead train` and `inducthead configs`."""

from __future__ import annotations

from pathlib import Path

from inducthead import presets
from inducthead.cli.common import add_train_args, preset_and_config, train_preset
from inducthead.training.distributed import is_main_process


def add_parsers(sub) -> None:
    p = sub.add_parser("train", help="train a preset into a run directory")
    p.add_argument(
        "--config",
        required=True,
        help="a preset name (see `inducthead configs`) or a JSON config file "
        "(`inducthead configs NAME --json` prints one to start from)",
    )
    p.add_argument("--out", required=True, type=Path, help="run directory to write")
    add_train_args(p)
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.add_argument(
        "--allow-schedule-change",
        action="store_true",
        help="resume with other --steps even where that changes the learning-rate schedule",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("configs", help="list the presets")
    p.add_argument("name", nargs="?", help="show one preset in full")
    p.add_argument(
        "--json", action="store_true", help="print the preset as a config file for --config"
    )
    p.set_defaults(func=cmd_configs)


def cmd_train(args) -> int:
    preset, train_cfg = preset_and_config(args)
    run, seconds = train_preset(args, preset, train_cfg, args.resume, args.overwrite)
    if is_main_process():  # torchrun: rank 0 reports
        print(f"{run!r}\ntrained in {seconds:.1f} s; checkpoints in {args.out / 'checkpoints'}")
    return 0


def cmd_configs(args) -> int:
    if args.name is None:
        if args.json:
            raise ValueError("--json prints one preset: name it (inducthead configs demo --json).")
        print(presets.table())
        return 0
    preset = presets.get(args.name)
    if args.json:
        print(presets.to_json(preset))
        return 0
    print(repr(preset))
    print(f"  {preset.description}\n  source: {preset.source}")
    for note in preset.notes:
        print(f"  note: {note}")
    print(
        f"  model: {preset.model.to_dict()}\n  task: {preset.task}\n"
        f"  train: {preset.train.to_dict()}"
    )
    return 0
