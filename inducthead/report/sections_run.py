"""Report sections read from the run directory alone (no model): the summary (configs, task,
steps, tokens, versions, status, what is on disk) and the training curves of metrics.jsonl."""

from __future__ import annotations

import json

import pandas as pd

from inducthead.runs import Run
from inducthead.runs.run import METRICS, RUN_JSON

MODEL_KEYS = (
    "model_name",
    "n_layers",
    "n_heads",
    "d_model",
    "d_head",
    "d_mlp",
    "n_ctx",
    "d_vocab",
    "attn_only",
    "normalization_type",
    "positional_embedding_type",
    "seed",
)
TRAIN_KEYS = (
    "steps",
    "batch_size",
    "lr",
    "schedule",
    "warmup_steps",
    "weight_decay",
    "grad_clip",
    "seed",
    "device",
    "eval_every",
)


def _pairs(d: dict, keys=None) -> pd.DataFrame:
    keys = [k for k in (keys or d) if k in d]
    return pd.DataFrame({"field": keys, "value": [_show(d[k]) for k in keys]})


def _show(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def status_line(run: Run) -> str | None:
    """The 'missing' line a run that has not finished gets, or None."""
    status, meta = run.status, run.meta
    if status == "finished":
        return None
    if status == "running":
        return (
            "the run has not finished (run.json status 'running': still training, or killed "
            "before it could say so): steps after the newest checkpoint and evaluation are missing"
        )
    if status == "interrupted":
        saved = meta.get("saved_step")
        return (
            f"the run was interrupted (saved at step {saved}); continue it with "
            "`inducthead train --resume`: later steps are missing"
        )
    return f"run.json status is {status!r}, not 'finished': the run may be incomplete"


def summary_section(section, run: Run) -> None:
    """Configs, task, steps, tokens, versions, status and what the directory holds."""
    meta, rows = run.meta, run.rows()
    last = rows[-1] if rows else {}
    steps = run.checkpoints
    damaged = run.damaged
    train = meta.get("train", {})
    facts = {
        "directory": str(run.path),
        "status": run.status,
        "created": meta.get("created", "–"),
        "steps trained (last evaluation)": last.get("step", "–"),
        "steps planned": train.get("steps", "–"),
        "final step": meta.get("final_step", "–"),
        "tokens seen": f"{last['tokens']:,}" if "tokens" in last else "–",
        "training time (s)": f"{last['elapsed_s']:.1f}" if "elapsed_s" in last else "–",
        "last eval loss": f"{last['eval_loss']:.4f}" if last.get("eval_loss") is not None else "–",
        "evaluations (metrics.jsonl rows)": len(rows),
        "checkpoints": f"{len(steps)} (steps {steps[0]}-{steps[-1]})" if steps else "none",
        "damaged checkpoints": ", ".join(str(s) for s, _ in damaged) or "none",
        "seed": meta.get("seed", "–"),
    }
    if meta.get("note"):
        facts["note"] = meta["note"]
    section.table(_pairs(facts), "Run", side=True)
    section.table(_pairs(meta.get("model", {}), MODEL_KEYS), "Model", side=True)
    section.table(
        _pairs(meta.get("task", {})), f"Task: {meta.get('task', {}).get('name', '?')}", side=True
    )
    section.table(_pairs(train, TRAIN_KEYS), "Training", side=True)
    section.table(_pairs(meta.get("versions", {})), "Versions", side=True)
    section.pre(json.dumps(meta, indent=2), "run.json in full", folded=True)

    line = status_line(run)
    if line:
        section.missing.append(line)
    if not (run.path / METRICS).is_file():
        section.missing.append(f"{METRICS} is missing: no training curves (loss, head scores)")
    elif not rows:
        section.missing.append(f"{METRICS} holds no complete evaluation row yet")
    if not steps:
        section.missing.append(
            "no checkpoint in checkpoints/ yet: head scores, verification, dynamics and the "
            "attention views need a model"
        )
    for step, why in damaged:
        section.missing.append(f"checkpoint at step {step} is damaged and was skipped ({why})")


def curves_section(section, run: Run) -> None:
    """Loss, ICL and head scores over training, as logged in metrics.jsonl (`Run.plot`)."""
    if not run.rows():
        section.missing.append(f"no rows in {METRICS}: no training curves to draw")
        return
    section.figure(
        run.plot(),
        "Training curves",
        f"from {METRICS}: one point per evaluation on the run's held-out batch",
    )


def is_run_dir(path) -> bool:
    return (path / RUN_JSON).is_file()
