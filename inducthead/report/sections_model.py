"""Report sections that need the model: detect's head scores and verdicts, verify on the detected
heads, the training dynamics over the checkpoints (`Trajectory`) and the attention views."""

from __future__ import annotations

import json

import pandas as pd

from inducthead.analysis import DetectionResult, detect, head_label
from inducthead.causal import CausalResult, verify
from inducthead.dynamics import Trajectory
from inducthead.runs import Run

# Results a run may already hold (`inducthead detect RUN --json RUN/detect.json`, the same for
# verify): used when they analysed the checkpoint the report shows, else computed afresh.
DETECT_JSON, VERIFY_JSON = "detect.json", "verify.json"
MAX_VIEW_HEADS = 8  # attention views of more heads get too small to read
VIEW_TOKENS = 64  # positions shown in the attention view of the run's own data
VERIFY_COLUMNS = (
    "label",
    "loss_effect",
    "accuracy_effect",
    "loss_share",
    "specificity",
    "redundant_with",
    "attention_clean",
    "attention_senders_ablated",
    "prefix_drop",
    "key_recovery",
    "query_recovery",
    "a",
    "b",
    "c",
    "confirmed",
)


def stored(run: Run, name: str, cls, step: int):
    """A result the run directory holds for checkpoint `step`, or None (absent, unreadable, or
    computed on another checkpoint)."""
    path = run.path / name
    if not path.is_file():
        return None
    try:
        result = cls.from_json(path)
    except (ValueError, KeyError, TypeError):  # json.JSONDecodeError is a ValueError
        return None
    source = result.source or {}
    return result if source.get("step") == step else None


def heads_section(section, run: Run, model, step: int) -> DetectionResult:
    """detect's per-head scores (heatmaps, table) and verdicts."""
    result = stored(run, DETECT_JSON, DetectionResult, step)
    where = f"read from {DETECT_JSON}" if result is not None else "computed now"
    if result is None:
        result = detect(model)
    section.text(
        f"inducthead.detect on the checkpoint at step {step} ({where}; probe: "
        f"{json.dumps(result.probe)})."
    )
    section.pre("\n".join(result.summary_lines()), "Verdicts")
    df = result.to_dataframe()
    section.table(df[[c for c in DetectionResult.COLUMNS if c in df]], "Scores per head")
    section.figure(
        result.plot(),
        "Head scores",
        "layer x head; induction heads outlined (thresholds: "
        + ", ".join(f"{k} {v:g}" for k, v in result.thresholds.to_dict().items())
        + ")",
    )
    section.notes += result.warnings
    return result


def verify_section(section, run: Run, model, step: int, detection: DetectionResult) -> None:
    """verify on the detected induction heads: one verdict per check and head."""
    heads = list(detection.induction_heads)
    result = stored(run, VERIFY_JSON, CausalResult, step)
    if result is not None and sorted(result.candidates) != sorted(heads):
        result = None  # it verified other heads than detect found
    where = f"read from {VERIFY_JSON}" if result is not None else "computed now"
    if result is None:
        result = verify(model, heads, detection=detection)
    names = ", ".join(head_label(h) for h in heads) or "none"
    section.text(f"inducthead.verify on the detected induction heads ({names}; {where}).")
    if not heads:
        section.text("No induction head was detected, so no head can be confirmed.")
    elif not result.confirmed:
        section.text("No head confirmed: no candidate passed all three checks.")
    section.pre(str(result).split("\n", 1)[-1] if heads else repr(result), "Verdicts")
    df = result.to_dataframe()
    if "redundant_with" in df:
        df["redundant_with"] = [", ".join(head_label(h) for h in hs) for hs in df["redundant_with"]]
    if len(df):
        section.table(df[[c for c in VERIFY_COLUMNS if c in df]], "Checks per head")
    section.figure(
        result.plot(),
        "Pattern-preserving ablation of every head",
        "change in loss and accuracy with each head's output zeroed, attention kept",
    )


def dynamics_section(section, run: Run, progress: bool) -> None:
    """Head scores, loss and ICL over the checkpoints, the phase-change window and emergence."""
    have = len(run.checkpoints)
    traj = Trajectory(run.path, progress=progress) if have >= 2 else None
    if traj is None or len(traj) < 2:
        intact = len(traj) if traj is not None else have
        section.missing.append(
            f"training dynamics need at least two intact checkpoints; this run has {intact}"
        )
        return
    section.text(f"{traj!r}; every checkpoint analysed once, cached in dynamics/cache.")
    scores = traj.head_scores()
    section.figure(scores.plot(), "Head scores over training", repr(scores))
    phase = traj.phase_change()
    section.figure(phase.plot(), "Loss and ICL score over training", phase.rule)
    section.figure(traj.loss_by_position().plot(), "Loss by position, one curve per checkpoint")
    rows = []
    for e in (traj.emergence("prefix_matching", 0.5), traj.emergence(by="loss")):
        rows.append(
            {
                "signal": e.metric,
                "threshold": e.threshold,
                "step": e.step,
                "between checkpoints": f"{e.before}-{e.after}" if e.step is not None else "–",
                "tokens": e.tokens,
                "seconds": e.elapsed_s,
                "definition": e.definition,
            }
        )
    section.table(pd.DataFrame(rows), "Emergence", float_format="%.4g")
    if phase.window is None:
        section.text("No phase-change window: the ICL score never falls.")


def view_heads(model, detection: DetectionResult) -> list[tuple[int, int]]:
    """The circuit to look at: the induction heads (strongest first: the view zooms on the first
    head), then the previous-token heads, else every head of the last layer; at most
    MAX_VIEW_HEADS."""
    heads = list(detection.induction_heads)
    heads += [h for h in detection.previous_token_heads if h not in heads]
    if not heads:
        last = model.cfg.n_layers - 1
        heads = [(last, h) for h in range(model.cfg.n_heads)]
    return [tuple(h) for h in heads[:MAX_VIEW_HEADS]]


def attention_section(section, run: Run, model, detection: DetectionResult) -> None:
    """Interactive circuitsvis views (offline: the page carries the wheel's JS bundle once, see
    `report.html`; each view is a fragment rendering into its own div)."""
    from inducthead import viz

    heads = view_heads(model, detection)
    names = ", ".join(head_label(h) for h in heads)
    stripes = viz.induction_stripes(model, heads=heads)
    section.html(
        stripes.fragment(include_js=False),
        f"Induction stripes: {names}",
        "attention on a random sequence repeated: an induction head attends one token after "
        "the previous copy of the current token (the off-diagonal stripe)",
    )
    tokens = run.task.eval_batch(1, seed=0, device="cpu").tokens[0, :VIEW_TOKENS]
    view = viz.attention(model, tokens, heads=heads)
    section.html(
        view.fragment(include_js=False),
        f"Attention on the run's own held-out data: {names}",
        f"the first {len(tokens)} tokens of one evaluation sequence of the run's task",
    )


def model_step(model) -> int | None:
    source = getattr(model, "loaded_from", None) or {}
    step = source.get("step")
    return int(step) if step is not None else None
