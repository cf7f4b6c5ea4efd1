"""Rebuild the shipped assets (`make assets`; `make assets ONLY=demo` for one):
- demo: the demo preset trained on the CPU (seed 0), for tests and tutorials so they need no
  training: weights-only checkpoints at the steps that span the induction head's emergence, plus
  the full metrics.jsonl and run.json (~1 min);
- olsson: the Olsson et al. 2022 text runs (`inducthead.papers.olsson.runs`: 1-, 2-, 3-layer and
  smeared-key 1- and 2-layer, seed 0, the full recipe; ~50 CPU-minutes on one core), then their
  quick reproduction into assets/reproductions/olsson/;
- figures: the README's pictures of the demo run (induction stripes, the phase change)."""

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


def demo() -> None:
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


def olsson() -> None:
    from inducthead.papers import olsson as paper

    paper.runs.build_assets(progress=False)
    result = paper.reproduce("quick", out_dir=OUT.parent / "reproductions" / "olsson")
    size = sum(f.stat().st_size for f in paper.runs.ASSETS.rglob("*")) / 1e6
    print(f"wrote {paper.runs.ASSETS} ({size:.1f} MB)")
    print(result)


def figures() -> None:
    """The README's pictures of the shipped demo run: the induction stripes of its final model
    and its loss, ICL score and head scores over training with the phase-change window."""
    from inducthead.dynamics import Trajectory

    out = OUT.parent / "figures"
    out.mkdir(exist_ok=True)
    stripes = ih.viz.induction_stripes(ih.load(OUT / "model.safetensors"))
    stripes.plot().savefig(out / "induction_stripes.png", dpi=80)
    with tempfile.TemporaryDirectory() as cache:  # nothing written into assets/demo
        traj = Trajectory(OUT, cache_dir=cache, progress=False)
        traj.phase_change().plot().savefig(out / "phase_change.png", dpi=80)
        traj.head_scores().plot().savefig(out / "head_scores.png", dpi=80)
    print(f"wrote {out}: {stripes!r}")


BUILDERS = {"demo": demo, "olsson": olsson, "figures": figures}


def main(argv=None) -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--only", default=",".join(BUILDERS), help="comma-separated: " + ",".join(BUILDERS)
    )
    names = [n.strip() for n in p.parse_args(argv).only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BUILDERS]
    if unknown:
        p.error(f"unknown asset(s) {unknown}; choose from {', '.join(BUILDERS)}")
    for name in names:
        BUILDERS[name]()


if __name__ == "__main__":
    main()
