"""Does `inducthead demo` form a real induction head fast on the CPU? (foundation issue, section 5)

For 3 seeds, train the demo preset (evaluating every 10 steps) and report the training wall time
and step at which the best layer-1 head's prefix matching (probe period 25, never trained on) and
the best layer-0 head's previous-token score both reach 0.5. Targets: within 30 s on 2 CPU cores
for every seed; `inducthead train --config demo` under 60 s from process start to exit.

`--smoke` runs the same code at a toy size (1 seed, 10 steps; the CLI run 2 steps, in this
process) and prints the table without appending it to RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import subprocess
import sys
import tempfile
import time

import torch
from _common import emit

import inducthead as ih


def emergence(seed: int, steps: int | None = None) -> tuple[int | None, float | None, float, dict]:
    preset = ih.configs.get("demo").with_seed(seed)
    cfg = preset.train.replace(eval_every=10, progress=False, device="cpu")
    if steps is not None:  # --smoke
        cfg = cfg.replace(steps=steps)
    run = ih.train(ih.HookedTransformer(preset.model), preset.make_task(), cfg)
    m = run.metrics
    pm1 = m.prefix_matching.map(lambda s: max(s[1]))
    prev0 = m.previous_token.map(lambda s: max(s[0]))
    hit = m[(pm1 >= 0.5) & (prev0 >= 0.5)]
    final = {"pm_L1": pm1.iloc[-1], "prev_L0": prev0.iloc[-1], "eval_loss": m.eval_loss.iloc[-1]}
    if len(hit) == 0:
        return None, None, m.elapsed_s.iloc[-1], final
    return int(hit.step.iloc[0]), float(hit.elapsed_s.iloc[0]), m.elapsed_s.iloc[-1], final


def cli_seconds(smoke: bool = False) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["train", "--config", "demo", "--out", f"{tmp}/run", "--device", "cpu"]
        argv.append("--no-progress")
        start = time.perf_counter()
        if smoke:  # the same command for 2 steps, in this process (a fresh one imports for ~7 s)
            from inducthead.cli import main as cli_main

            with contextlib.redirect_stdout(io.StringIO()):
                code = cli_main([*argv, "--steps", "2"])
            if code != 0:
                raise RuntimeError(f"inducthead {' '.join(argv)} failed with exit status {code}")
        else:
            subprocess.run(
                [sys.executable, "-m", "inducthead", *argv], check=True, capture_output=True
            )
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    parser.add_argument("--smoke", action="store_true", help="toy size, print only (tests)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds = 1
    lines = [
        f"threads: {torch.get_num_threads()}",
        "",
        "| seed | step reached | train time reached (s) | total train time (s) "
        "| final L1 prefix-matching | final L0 prev-token | final held-out loss |",
        "|---|---|---|---|---|---|---|",
    ]
    worst = 0.0
    for seed in range(args.seeds):
        step, seconds, total, final = emergence(seed, steps=10 if args.smoke else None)
        worst = max(worst, seconds if seconds is not None else float("inf"))
        lines.append(
            f"| {seed} | {step} | {seconds if seconds is None else round(seconds, 1)} "
            f"| {total:.1f} | "
            f"{final['pm_L1']:.3f} | {final['prev_L0']:.3f} | {final['eval_loss']:.3f} |"
        )
    cli = cli_seconds(args.smoke)
    lines += [
        "",
        f"worst seed reaches both scores >= 0.5 after {worst:.1f} s of training (target <= 30 s)",
        f"`inducthead train --config demo` process start to exit: {cli:.1f} s (target < 60 s)",
    ]
    emit(
        "Demo emergence on the CPU (benchmarks/demo_emergence.py)",
        lines,
        save=not (args.no_record or args.smoke),
    )


if __name__ == "__main__":
    main()
