"""Rebuild assets/demo: the demo preset trained on the CPU (seed 0), shipped for tests and
tutorials so they need no training. Weights-only checkpoints at the steps that span the induction
head's emergence, plus the full metrics.jsonl and run.json. Run with `make assets`."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import inducthead as ih
from inducthead.runs import checkpoint as ckpt

OUT = Path(__file__).resolve().parent / "demo"
# Steps kept: the start, the plateau, the phase change (~200-350 on the CPU) and the end.
KEEP = (0, 50, 100, 150, 200, 225, 250, 275, 300, 350, 400, 500, 600, 800)


def main() -> None:
    preset = ih.configs.get("demo")
    steps = tuple(sorted(set(KEEP) | {preset.train.steps}))
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "demo"
        cfg = preset.train.replace(checkpoint_steps=steps, progress=False, device="cpu")
        ih.train(ih.HookedTransformer(preset.model), preset.make_task(), cfg, run_dir)
        if OUT.exists():
            shutil.rmtree(OUT)
        (OUT / ckpt.CHECKPOINT_DIR).mkdir(parents=True)
        run = ih.Run(run_dir)
        for step in steps:  # weights only: a fifth of the size, nothing needed to resume
            model = run.load(step)
            ckpt.write_checkpoint(
                OUT / ckpt.CHECKPOINT_DIR / ckpt.checkpoint_name(step), model, step=step
            )
        meta = json.loads((run_dir / "run.json").read_text())
        meta["note"] = "weights-only checkpoints shipped with inducthead (assets/build.py)"
        (OUT / "run.json").write_text(json.dumps(meta, indent=2))
        shutil.copy(run_dir / "metrics.jsonl", OUT / "metrics.jsonl")
        shutil.copy(
            OUT / ckpt.CHECKPOINT_DIR / ckpt.checkpoint_name(steps[-1]), OUT / "model.safetensors"
        )
    size = sum(f.stat().st_size for f in OUT.rglob("*")) / 1e6
    print(f"wrote {OUT}: {len(steps)} checkpoints, {size:.1f} MB")


if __name__ == "__main__":
    main()
