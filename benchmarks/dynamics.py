"""Training dynamics at scale (issue "Training dynamics", Performance): memory, throughput, LLC
cost, and the demo run's stage signals side by side.

1. Peak memory over 200 checkpoints of a demo-sized model (written as training writes them:
   weights + AdamW moments + RNG): `Trajectory.head_scores` vs keeping every loaded model (what
   a loop that collects models does). Each in a fresh process; peak RSS growth over the process
   after setup, next to the size of one checkpoint's model tensors. Goal: <= 2 checkpoints +
   results.
2. Head-score throughput (checkpoints/s) over the same 200 checkpoints against the naive loop
   `ih.load(path)` + `ih.detect(model)`, interleaved, same probe. Goal: no overhead beyond the
   forward passes. Also: K = 8 checkpoints in one vmapped forward (`torch.func`) against 8
   forwards, to see whether batching checkpoints helps here.
3. LLC cost per checkpoint with the default `LLCSettings`.
4. The shipped demo run and a fresh 800-step demo run (seed 0): every stage signal (ICL phase
   change, prefix-matching jump, loss drop, essential-dynamics turn, LLC change) side by side.

`--smoke` runs every code path at a toy size (6 checkpoints of a tiny model, 2 SGLD draws, no
training) and prints without appending to RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from _common import emit

import inducthead as ih
from inducthead.dynamics import LLCSettings, Trajectory
from inducthead.runs.checkpoint import checkpoint_name, write_checkpoint

ROOT = Path(__file__).resolve().parent.parent
MEMORY_CHILD = """
import resource, sys, warnings, torch
warnings.simplefilter("ignore")
torch.set_num_threads(1)
import inducthead as ih
from inducthead.dynamics import Trajectory
files = sorted(__import__("pathlib").Path(sys.argv[1]).glob("*.safetensors"))
ih.detect(ih.load(files[0]), n_samples=2)  # warm up allocators and kernels
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if sys.argv[2] == "trajectory":
    t = Trajectory(files, cache=False)
    t.head_scores(phase_change=False)
    live = t.max_live_models
else:
    kept = [ih.load(f) for f in files]
    for m in kept:
        ih.detect(m)
    live = len(kept)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(peak - base, live)
"""


def write_trajectory(folder: Path, cfg, n: int) -> list[Path]:
    """`n` checkpoints of `cfg` with AdamW state, as training writes them (weights drift)."""
    model = ih.HookedTransformer(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tokens = torch.randint(1, cfg.d_vocab, (4, 32))
    files = []
    for step in range(n):
        loss = model(tokens, return_type="loss")
        loss.backward()
        opt.step()
        opt.zero_grad()
        files.append(write_checkpoint(folder / checkpoint_name(step), model, opt, step=step))
    return files


def memory(folder: Path, mode: str, smoke: bool = False) -> tuple[float, int]:
    """Peak RSS growth (MiB) and models alive at once, in a fresh process (`smoke`: in this
    one, which checks the code path but not the number: a fresh interpreter imports for ~7 s)."""
    if smoke:
        import contextlib
        import io

        out = io.StringIO()
        argv, sys.argv = sys.argv, ["-c", str(folder), mode]
        threads = torch.get_num_threads()
        try:
            with contextlib.redirect_stdout(out), warnings.catch_warnings():
                exec(MEMORY_CHILD, {"__name__": "memory_child"})
        finally:
            sys.argv = argv
            torch.set_num_threads(threads)
        kib, live = out.getvalue().split()
    else:
        code = subprocess.run(
            [sys.executable, "-c", MEMORY_CHILD, str(folder), mode],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        kib, live = code.stdout.split()
    return int(kib) / 1024, int(live)


def throughput(files: list[Path], repeats: int) -> tuple[float, float]:
    """(trajectory, naive) checkpoints per second, interleaved, best of `repeats`."""
    best_t = best_n = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        Trajectory(files, cache=False).head_scores(phase_change=False)
        best_t = max(best_t, len(files) / (time.perf_counter() - start))
        start = time.perf_counter()
        for f in files:
            ih.detect(ih.load(f))
        best_n = max(best_n, len(files) / (time.perf_counter() - start))
    return best_t, best_n


def vmapped_ratio(files: list[Path], k: int = 8, repeats: int = 5) -> float:
    """Time of k separate forwards / one vmapped forward of k checkpoints (probe-sized input)."""
    import copy

    from torch.func import functional_call, stack_module_state, vmap

    models = [ih.load(f) for f in files[:k]]
    cfg = models[0].cfg
    period = min(25, (cfg.n_ctx - 1) // 4, cfg.d_vocab - 1)
    tokens = ih.analysis.ModelAdapter.wrap(models[0]).probe(period, n_samples=20)  # detect-sized
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    base.check_inputs = False

    def one(p, b):
        return functional_call(base, (p, b), (tokens,))

    batched = vmap(one)
    with torch.no_grad():
        batched(params, buffers)
        sep = vm = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            for m in models:
                m(tokens)
            sep = min(sep, time.perf_counter() - start)
            start = time.perf_counter()
            batched(params, buffers)
            vm = min(vm, time.perf_counter() - start)
    return sep / vm


def signals(traj: Trajectory, llc: bool) -> list[tuple[str, str]]:
    stages = traj.stages(llc=llc)
    rows = []
    for r in stages.data.itertuples():
        point = "" if r.step is None else f" (point {r.step:.0f})"
        rows.append((r.signal, f"{r.start}-{r.end}{point}" if r.start is not None else "none"))
    rows.append(("all in or next to the phase change", str(stages.agree)))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    parser.add_argument("--smoke", action="store_true", help="toy size, print only (tests)")
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # toy sizes shorten detect's probe
        run(args)


def run(args) -> None:
    demo_cfg = ih.presets.get("demo").model
    cfg = (
        demo_cfg
        if not args.smoke
        else ih.HookedTransformerConfig(
            n_layers=2, d_model=16, n_heads=2, d_head=8, d_vocab=30, n_ctx=64, attn_only=True
        )
    )
    n = 6 if args.smoke else args.checkpoints
    lines = [f"threads: {torch.get_num_threads()}", ""]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ckpts"
        files = write_trajectory(folder, cfg, n)
        model_mib = sum(p.numel() * 4 for p in ih.load(files[0]).parameters()) / 2**20
        file_mib = files[0].stat().st_size / 2**20
        traj_mib, live = memory(folder, "trajectory", args.smoke)
        naive_mib, kept = memory(folder, "naive", args.smoke)
        lines += [
            f"| {n} checkpoints of {cfg.n_layers}L d_model {cfg.d_model} | peak RSS growth (MiB) "
            "| models alive at once |",
            "|---|---|---|",
            f"| Trajectory.head_scores | {traj_mib:.1f} | {live} |",
            f"| all models kept, then detect | {naive_mib:.1f} | {kept} |",
            "",
            f"one checkpoint: {file_mib:.2f} MiB on disk (weights + AdamW moments), "
            f"{model_mib:.2f} MiB of model tensors; trajectory peak = "
            f"{traj_mib / model_mib:.1f} x the model tensors (goal <= 2 + results)",
            "",
        ]
        t_rate, n_rate = throughput(files, 1 if args.smoke else args.repeats)
        ratio = vmapped_ratio(files, k=min(8, n), repeats=2 if args.smoke else 5)
        lines += [
            "| head scores | checkpoints/s |",
            "|---|---|",
            f"| Trajectory (model-only read, hash verified, detect) | {t_rate:.1f} |",
            f"| naive ih.load + ih.detect | {n_rate:.1f} |",
            "",
            f"trajectory / naive throughput: {t_rate / n_rate:.2f}x (goal >= 1.0: no overhead)",
            f"8 separate forwards / one vmapped forward of 8 checkpoints: {ratio:.2f}x",
            "",
        ]
        # LLC cost per checkpoint, default settings
        demo_dir = Path(tmp) / "demo"
        shutil.copytree(ROOT / "assets" / "demo", demo_dir)
        if args.smoke:  # importing devinterp alone takes ~7 s of CPU; the slow tests run the LLC
            lines += ["LLC: skipped in --smoke (tests/test_dynamics_slow.py runs it)", ""]
        else:
            settings = LLCSettings()
            sub = [demo_dir / "checkpoints" / checkpoint_name(s) for s in (200, 250, 300, 800)]
            llc = Trajectory(sub, cache=False).llc(settings)
            lines += [
                f"LLC: {llc.seconds_per_checkpoint:.1f} s per checkpoint (mean of 4) with "
                f"{json.dumps(settings.to_dict())}",
                "",
            ]
            shipped = signals(Trajectory(demo_dir), llc=True)
            fresh_dir = Path(tmp) / "fresh"
            preset = ih.presets.get("demo")
            ih.train(
                ih.HookedTransformer(preset.model),
                preset.make_task(),
                preset.train.replace(progress=False, device="cpu"),
                fresh_dir,
            )
            fresh = signals(Trajectory(fresh_dir), llc=True)
            lines += ["| signal | shipped assets/demo | fresh 800-step run |", "|---|---|---|"]
            lines += [f"| {a[0]} | {a[1]} | {b[1]} |" for a, b in zip(shipped, fresh, strict=True)]
    emit(
        "Training dynamics (benchmarks/dynamics.py)", lines, save=not (args.no_record or args.smoke)
    )


if __name__ == "__main__":
    main()
