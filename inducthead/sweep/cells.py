"""Training one sweep cell into its run directory (in the sweep process or a Ray worker)."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

from inducthead.analysis import emergence_step
from inducthead.model import HookedTransformer
from inducthead.runs import Run, RunDirError, safe_child
from inducthead.sweep.spec import NOT_TRAINED, Cell
from inducthead.training import train


def _summary(run, threshold: float) -> dict[str, Any]:
    rows = run.metrics.to_dict("records")
    last = rows[-1] if rows else {}
    trained = [r for r in rows if r.get("train_loss") is not None]
    return {
        "final_step": run.meta.get("final_step"),
        "train_loss": trained[-1]["train_loss"] if trained else None,
        "eval_loss": last.get("eval_loss"),
        "best_prefix_matching": last.get("best_prefix_matching"),
        "best_previous_token": last.get("best_previous_token"),
        "emergence_step": emergence_step(rows, threshold),
    }


def run_cell(cell: dict[str, Any], sweep_dir: str, threshold: float = 0.5) -> dict[str, Any]:
    """Train one cell into `sweep_dir/<name>` (resuming it if interrupted; nothing to do if it
    finished) and return its table row. Runs in the sweep process or in a Ray worker."""
    c = Cell(**cell)
    path = safe_child(sweep_dir, c.name, what="sweep cell name")
    model_cfg, task, cfg = c.build()
    start = time.perf_counter()
    meta_path = path / "run.json"
    if meta_path.is_file():
        with contextlib.suppress(ValueError, OSError):
            meta = json.loads(meta_path.read_text())
            stored = json.loads(json.dumps([model_cfg.to_dict(), task.to_dict(), cfg.to_dict()]))
            trained = [meta.get("model"), meta.get("task"), meta.get("train", {})]
            recipe_same = all(
                trained[2].get(k) == v for k, v in stored[2].items() if k not in NOT_TRAINED
            )
            if (
                meta.get("status") == "finished"
                and meta.get("final_step") == cfg.steps
                and trained[:2] == stored[:2]
                and recipe_same
            ):
                return {"status": "done before", **_summary(Run(path), threshold)}
    # Anything else resumes. A cell trained with another setup (a changed `set:` value, grid
    # value or preset) is refused, naming the difference, never reported as done.
    try:
        train(HookedTransformer(model_cfg), task, cfg, path, resume=True)
    except RunDirError as e:
        raise RunDirError(
            f"{e} (sweep cell {c.name}: give the sweep a new --out, or delete {path} to retrain "
            "it with the new setup)"
        ) from None
    return {
        "status": "finished",
        "seconds": time.perf_counter() - start,
        **_summary(Run(path), threshold),
    }
