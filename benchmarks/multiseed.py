"""K seeds trained together (`train_many`, one vmapped computation) vs one after another (`train`).

Demo preset, K = 8 seeds. Two measurements:

1. Training steps, interleaved: chunks of `--chunk` steps of train_many's batched step (all K
   models) alternate with chunks of train()'s step run for each of the K models in turn; the
   speedup is the median over chunk pairs of sequential ÷ together. Both see the same machine
   load within a second or two, so this is the robust number on a shared machine.
2. End to end, ABBA: K `train()` calls vs one `train_many()` call, each with evaluations (head
   scores) every 25 steps and 10 checkpoints written to temporary run directories. Whole runs
   take tens of seconds, so bursts of load from other processes can bias a round: read it with
   the load averages printed next to it.

Goals (issue 6): >= 0.95x on the CPU (a demo-sized model is already compute-bound there), >= 3x
on a GPU (small models leave it idle).

    python benchmarks/multiseed.py                       # CPU
    python benchmarks/multiseed.py --device cuda --amp   # a GPU run
    python benchmarks/multiseed.py --smoke               # K = 2, a few steps, print only (tests)
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _common import emit

import inducthead as ih
from inducthead.runs import RunWriter
from inducthead.training import VmappedStepper, make_optimizer, train_many, train_step


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def steps_interleaved(preset, seeds, cfg, chunks: int, chunk: int) -> tuple[list[str], float]:
    """Median over chunk pairs of (K sequential train steps) ÷ (one batched K-model step)."""
    task, device = preset.make_task(), torch.device(cfg.device)
    cfgs = [cfg.replace(seed=s) for s in seeds]
    solo = [ih.HookedTransformer(preset.model.replace(seed=s)).to(device) for s in seeds]
    for m in solo:
        m.check_inputs = False
    optims = [make_optimizer(m.parameters(), cfg, device) for m in solo]
    stacked = [ih.HookedTransformer(preset.model.replace(seed=s)).to(device) for s in seeds]
    writers = [RunWriter.create(None, m, task, c) for m, c in zip(stacked, cfgs, strict=True)]
    batched = VmappedStepper(stacked, task, cfgs, device)
    batched.start(writers)
    amp = cfg.amp and device.type == "cuda"

    def sequential(step):
        for m, o, c in zip(solo, optims, cfgs, strict=True):
            with m.fast_attention():  # as train() runs it
                train_step(m, m, o, task, c, step, device, amp)

    def together(step):
        batched.step(step)

    seq_t, tog_t = [], []
    step = 1
    for fn in (sequential, together):  # warm up
        fn(step)
    for r in range(chunks):
        order = [(sequential, seq_t), (together, tog_t)]
        for fn, times in order if r % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            for i in range(chunk):
                fn(step + 1 + i)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        step += chunk
    ratio = statistics.median(s / t for s, t in zip(seq_t, tog_t, strict=True))
    tokens = len(seeds) * chunk * cfg.batch_size * task.seq_len
    line = (
        f"| training steps, interleaved ({chunks} x {chunk} steps) "
        f"| {statistics.median(seq_t):.2f} | {statistics.median(tog_t):.2f} "
        f"| {tokens / statistics.median(seq_t):,.0f} | {tokens / statistics.median(tog_t):,.0f} "
        f"| {ratio:.2f}x |"
    )
    return [line], ratio


def setting(name: str, preset, seeds, cfg, rounds: int, to_disk: bool) -> tuple[list[str], float]:
    task = preset.make_task()

    def sequential():
        with tempfile.TemporaryDirectory() as tmp:
            for s in seeds:
                model = ih.HookedTransformer(preset.model.replace(seed=s))
                out = Path(tmp) / f"seed_{s}" if to_disk else None
                ih.train(model, task, cfg.replace(seed=s), out)

    def together():
        with tempfile.TemporaryDirectory() as tmp:
            train_many(preset.model, task, cfg, tmp if to_disk else None, seeds=seeds)

    together_s, sequential_s = [], []
    for r in range(rounds):
        order = [(sequential, sequential_s), (together, together_s)]
        for fn, times in order if r % 2 == 0 else order[::-1]:  # ABBA
            times.append(timed(fn))
    ratio = statistics.median(s / t for s, t in zip(sequential_s, together_s, strict=True))
    tokens = len(seeds) * cfg.steps * cfg.batch_size * task.seq_len
    line = (
        f"| {name} | {statistics.median(sequential_s):.1f} | {statistics.median(together_s):.1f} "
        f"| {tokens / statistics.median(sequential_s):,.0f} "
        f"| {tokens / statistics.median(together_s):,.0f} | {ratio:.2f}x |"
    )
    return [line], ratio


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=8, help="seeds (default 8)")
    parser.add_argument("--steps", type=int, default=100, help="end-to-end run length")
    parser.add_argument("--rounds", type=int, default=2, help="end-to-end ABBA rounds")
    parser.add_argument("--chunks", type=int, default=16, help="interleaved chunk pairs")
    parser.add_argument("--chunk", type=int, default=4, help="steps per interleaved chunk")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="K = 2, 2 steps, 1 round, 2 chunks of 1 step; print only (tests)",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.k, args.steps, args.rounds, args.chunks, args.chunk = 2, 2, 1, 2, 1
    preset = ih.configs.get("demo")
    seeds = list(range(args.k))
    base = preset.train.replace(steps=args.steps, progress=False, device=args.device, amp=args.amp)
    load = os.getloadavg()[0]
    lines = [
        f"demo preset, K = {args.k} seeds, batch {base.batch_size} x {preset.make_task().seq_len} "
        f"tokens; device {args.device}, amp {args.amp}, threads {torch.get_num_threads()}; "
        f"load average at start {load:.2f}",
        "",
        "| measurement | sequential (s) | together (s) | sequential tokens/s | together tokens/s "
        "| together speedup (sequential ÷ together) |",
        "|---|---|---|---|---|---|",
    ]
    ratios = {}
    rows, ratios["training steps, interleaved"] = steps_interleaved(
        preset, seeds, base, args.chunks, args.chunk
    )
    lines += rows
    name = (
        f"end to end, {args.steps} steps, eval + head scores every 25 steps, 10 checkpoints "
        f"({args.rounds} rounds ABBA)"
    )
    cfg = base.replace(n_checkpoints=10)
    rows, ratios[name] = setting(name, preset, seeds, cfg, args.rounds, True)
    lines += rows
    goal = 3.0 if args.device.startswith("cuda") else 0.95
    lines += ["", f"load average at end {os.getloadavg()[0]:.2f}", ""]
    for name, ratio in ratios.items():
        verdict = "met" if ratio >= goal else "MISSED"
        lines.append(f"- {name}: {ratio:.2f}x (goal >= {goal}x on {args.device}: {verdict})")
    if not args.device.startswith("cuda"):
        lines.append(
            "- GPU goal (>= 3x): not measured here (no GPU lent to this session); run "
            "`python benchmarks/multiseed.py --device cuda --amp` on one."
        )
    emit(
        "Multi-seed training (benchmarks/multiseed.py)",
        lines,
        save=not (args.no_record or args.smoke),
    )


if __name__ == "__main__":
    main()
