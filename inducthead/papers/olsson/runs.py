"""The text runs behind the reproduction: training them (full mode, `make assets`) and the
shipped copy `assets/olsson/` that quick mode analyses.

`assets/olsson/` holds, per run (`RUNS`), weights-only checkpoints at the steps that span the
phase change (`KEEP`), its run.json and metrics.jsonl; and, shared by all runs, the BPE
tokenizer they were trained with (`tokenizer.json`) and a fixed held-out batch of windows
(`eval_tokens.npy`, `[n, seq_len + 1]` uint16). The tokenizer is trained on the running
interpreter's standard library, so another Python version builds another vocabulary: quick
mode evaluates on the shipped tokens, never on a freshly built corpus.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from inducthead import presets
from inducthead.model import HookedTransformer
from inducthead.runs import Run
from inducthead.runs import checkpoint as ckpt
from inducthead.tasks import Batch
from inducthead.training import train

# key -> preset; the keys name the metric keys (`induction_heads_<key>`)
RUNS = {
    "1l": "olsson-text-1l",
    "2l": "olsson-text-2l",
    "3l": "olsson-text-3l",
    "smeared_1l": "olsson-text-smeared-1l",
    "smeared_2l": "olsson-text-smeared-2l",
}
# Shipped steps: log-spaced, dense where the measured phase changes lie (smeared 1L 100-200,
# 2L and 3L 400-800 on seed 0); 14 float16 checkpoints of 0.45-0.75 MB per run.
KEEP = (0, 50, 100, 200, 300, 400, 500, 600, 700, 800, 1000, 1200, 1500, 2000)
N_EVAL = 256  # held-out windows shipped (every position of each is scored)
ASSETS = Path(__file__).resolve().parents[3] / "assets" / "olsson"


def train_runs(
    out_dir: Path, keys=tuple(RUNS), steps: int | None = None, device=None, progress: bool = True
) -> dict[str, Path]:
    """Train each run's preset (seed 0) into `out_dir/<key>`; `steps` shortens the recipe."""
    where = {}
    for key in keys:
        preset = presets.get(RUNS[key])
        cfg = preset.train.replace(progress=progress, device=device or "auto")
        if steps is not None:
            cfg = cfg.shortened(steps)
        where[key] = Path(out_dir) / key
        train(HookedTransformer(preset.model), preset.make_task(), cfg, where[key], overwrite=True)
    return where


def write_shared(task, dest: Path, n: int = N_EVAL, seed: int = 0) -> None:
    """The tokenizer file and `n` held-out windows of `task` (a `BPECorpus`) into `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(task.describe()["tokenizer"], dest / "tokenizer.json")
    b = task.eval_batch(n, seed=seed)
    windows = torch.cat([b.tokens, b.targets[:, -1:]], 1).numpy().astype(np.uint16)
    np.save(dest / "eval_tokens.npy", windows, allow_pickle=False)


def eval_batch(where: Path = ASSETS) -> Batch:
    """The shipped held-out windows as a `Batch` (every position scored)."""
    path = Path(where) / "eval_tokens.npy"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: quick mode analyses the runs shipped in the repository's "
            "assets/olsson (run `make assets` to rebuild them, or reproduce(mode='full'))."
        )
    w = torch.from_numpy(np.load(path, allow_pickle=False).astype(np.int64))
    return Batch(w[:, :-1], w[:, 1:], torch.ones_like(w[:, 1:], dtype=torch.bool))


def ship(run_dir: Path, dest: Path, keep=KEEP, dtype=torch.float16) -> list[int]:
    """Copy `run_dir` to `dest` with weights-only checkpoints at the steps of `keep` it has (its
    last step always), stored as `dtype`, run.json and metrics.jsonl; returns the steps written.
    Float16 halves the size; `Run.load` reads the weights back into the model's float32
    (measured on the 2-layer run's last checkpoint: mean loss and ICL score change < 1e-5 nats,
    the largest per-token change 0.017)."""
    run = Run(run_dir)
    steps = sorted({s for s in keep if s in run.checkpoints} | {run.checkpoints[-1]})
    if dest.exists():
        shutil.rmtree(dest)
    (dest / ckpt.CHECKPOINT_DIR).mkdir(parents=True)
    for step in steps:  # weights only: a fifth of the size, nothing needed to resume
        path = dest / ckpt.CHECKPOINT_DIR / ckpt.checkpoint_name(step)
        ckpt.write_checkpoint(path, run.load(step).to(dtype), step=step)
    meta = json.loads((Path(run_dir) / "run.json").read_text())
    meta["note"] = (
        f"weights-only {str(dtype).removeprefix('torch.')} checkpoints shipped with inducthead "
        "(papers/olsson/runs.py)"
    )
    (dest / "run.json").write_text(json.dumps(meta, indent=2))
    shutil.copy(Path(run_dir) / "metrics.jsonl", dest / "metrics.jsonl")
    return steps


def build_assets(
    out: Path = ASSETS,
    work_dir: Path | None = None,
    progress: bool = True,
    keys=tuple(RUNS),
    steps: int | None = None,
    device="cpu",
) -> None:
    """Train the runs `keys` by the full recipe (`steps` shortens it), ship each into `out` and
    write the shared tokenizer and windows there: what `make assets` and full mode run;
    `work_dir` keeps the complete training runs (default: a temporary folder)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        trained = train_runs(Path(work_dir or tmp), keys, steps, device=device, progress=progress)
        for key, run_dir in trained.items():
            ship(run_dir, Path(out) / key)
    write_shared(presets.get(RUNS["2l"]).make_task(), Path(out), N_EVAL)
