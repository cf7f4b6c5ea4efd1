"""The paper's claims (`.paper`) and how our numbers are judged (`status`). Olsson et al. 2022,
"In-context Learning and Induction Heads" (arXiv 2209.11895; sections as on
transformer-circuits.pub): Argument 1 (co-occurrence: ICL score, prefix matching, loss bump and
per-token-loss PCA change in one window), Argument 2 (smeared keys), Argument 3 (ablations), the
Model Analysis Table (the before-and-after vector).

Thresholds (measured on the shipped runs, seed 0; `papers.olsson.analysis` for the definitions):
- `MARGIN` 0.15 nats (`analysis.MARGIN`): the paper's "less than 0.15 nats before"; the 1-layer
  run's band ICL score stays within +-0.05 of 0 over all 2000 steps (its noise), so a fall of
  more than 0.15 across a window is 3x that noise.
- coincide: the prefix-matching jump lies in the ICL window widened by one shipped checkpoint
  interval on each side (the jump is interpolated between checkpoints), and the loss-bump and
  PCA-pivot windows overlap it; "not the 1-layer model": its fastest PC2 fall per step is under
  half of every pivot's (measured 0.31 against >= 0.96).
- attribution: the head whose pattern-preserving ablation undoes most of the phase change is an
  induction head of the snapshot at the window's end.
- ablation: "almost all the in-context learning ... comes from these induction heads": most
  (> 1/2) of the final ICL score removed by pattern-preserving ablation of detect's induction
  heads, while as many other heads of the same layers remove less than half of that.
"""

from __future__ import annotations

import math

from inducthead.papers.common import Claim
from inducthead.papers.olsson.analysis import MARGIN

LABELS = {
    "1l": "1L",
    "2l": "2L",
    "3l": "3L",
    "smeared_1l": "smeared 1L",
    "smeared_2l": "smeared 2L",
}

PAPER = [
    Claim(
        "induction_heads",
        "induction heads form in models with more than one layer, never in one layer",
        "heads in 2L and 3L; none in 1L",
        "Argument 1",
        provisional=False,
    ),
    Claim(
        "phase_change",
        "ICL develops abruptly in a narrow window, with the prefix-matching jump and the loss bump",
        "2.5e9-5e9 tokens; ICL < 0.15 nats before, ~0.4 after; 1L: little ICL ever",
        "Argument 1",
        provisional=False,
    ),
    Claim(
        "pca_pivot",
        "per-token-loss PCA trajectories pivot in the same window (not the 1-layer model)",
        "pivot inside the window",
        "Argument 1, per-token loss analysis",
    ),
    Claim(
        "smeared_keys",
        "smeared keys: a one-layer model forms induction heads and ICL; deeper models earlier",
        "1L forms ICL; 2L forms it earlier",
        "Argument 2",
        provisional=False,
    ),
    Claim(
        "ablation",
        "knocking out the induction heads removes almost all ICL in small attention-only models",
        "almost all",
        "Argument 3 (pattern-preserving ablation)",
        provisional=False,
    ),
    Claim(
        "attribution",
        "ablating induction heads undoes the phase change (before-and-after vector)",
        "induction heads' attribution stands out",
        "Model Analysis Table",
    ),
]


def _window(r: dict) -> str:
    w = r.get("window")
    return f"{w['start']}-{w['end']}" if w else "none"


def _fall(r: dict) -> float:
    """The ICL score's change across the window, start to end (negative: it fell)."""
    if r.get("window") is None:
        return 0.0
    return r["icl_score_window_end"] - r["icl_score_before"]


def _has_phase_change(r: dict) -> bool:
    return r.get("window") is not None and -_fall(r) > MARGIN


def _interval(r: dict, step: int) -> tuple[int, int]:
    """The shipped checkpoints before `step` and after it (the window widened by one)."""
    steps = r["steps"]
    i = steps.index(step)
    return steps[max(i - 1, 0)], steps[min(i + 1, len(steps) - 1)]


def coincides(r: dict) -> dict[str, bool]:
    """Which of the run's signals fall in its ICL window (module docstring)."""
    w = r.get("window")
    if w is None:
        return {"prefix_matching": False, "loss_bump": False, "pca_pivot": False}
    lo, hi = _interval(r, w["start"])[0], _interval(r, w["end"])[1]
    jump = r.get("prefix_matching_jump_step", math.nan)

    def overlaps(x):
        return bool(x) and x["start"] < w["end"] and x["end"] > w["start"]

    return {
        "prefix_matching": math.isfinite(jump) and lo <= jump <= hi,
        "loss_bump": overlaps(r.get("loss_gap_window")),
        "pca_pivot": overlaps(r.get("pca_pivot")),
    }


def judge(m: dict) -> tuple[dict[str, str], dict[str, str]]:
    runs = m["runs"]
    ours, status = {}, {}
    heads = {k: r["induction_heads"] for k, r in runs.items()}
    ours["induction_heads"] = "; ".join(
        f"{LABELS[k]}: {', '.join(h) or 'none'}" for k, h in heads.items()
    )
    deep = [k for k in ("2l", "3l") if k in runs]
    if "1l" not in runs or not deep:
        status["induction_heads"] = "not run"
    elif heads["1l"] or not any(heads[k] for k in deep):
        status["induction_heads"] = "differs"
    else:
        status["induction_heads"] = "reproduced" if all(heads[k] for k in deep) else "partly"
    multi = [k for k in ("2l", "3l") if k in runs]
    ours["phase_change"] = "; ".join(_phase_text(k, runs[k]) for k in runs)
    formed = [k for k in multi if _has_phase_change(runs[k]) and all(_co(runs[k], "pm", "lb"))]
    one_flat = "1l" in runs and not _has_phase_change(runs["1l"])
    status["phase_change"] = _grade(one_flat and bool(multi) and formed == multi, bool(formed))
    with_heads = [k for k in runs if runs[k]["induction_heads"] and _has_phase_change(runs[k])]
    ours["pca_pivot"] = "; ".join(
        f"{LABELS[k]}: pivot {_span(runs[k].get('pca_pivot'))} vs window {_window(runs[k])}"
        for k in runs
    )
    pivots = [k for k in with_heads if coincides(runs[k])["pca_pivot"]]
    # "not the 1-layer model": its fastest PC2 fall under half of every other pivot's
    rates = [runs[k]["pca_pivot"]["peak_rate"] for k in with_heads if runs[k].get("pca_pivot")]
    one = (runs.get("1l") or {}).get("pca_pivot")
    one_quiet = one is None or not rates or one["peak_rate"] < 0.5 * min(rates)
    if one is not None and rates:
        ours["pca_pivot"] += (
            f" (fastest PC2 fall per step: 1L {one['peak_rate']:.2f}, runs with induction heads "
            f">= {min(rates):.2f})"
        )
    all_pivot = bool(with_heads) and pivots == with_heads and one_quiet
    status["pca_pivot"] = _grade(all_pivot, bool(pivots))
    ours["smeared_keys"], status["smeared_keys"] = _smeared(runs)
    ours["ablation"], status["ablation"] = _ablation(runs)
    ours["attribution"], status["attribution"] = _attribution(runs)
    return ours, status


def _grade(all_ok: bool, any_ok: bool) -> str:
    return "reproduced" if all_ok else "partly" if any_ok else "differs"


def _co(r: dict, *which) -> list[bool]:
    c = coincides(r)
    names = {"pm": "prefix_matching", "lb": "loss_bump", "pp": "pca_pivot"}
    return [c[names[w]] for w in which]


def _span(w) -> str:
    return f"{w['start']}-{w['end']}" if w else "none"


def _phase_text(key: str, r: dict) -> str:
    text = f"{LABELS[key]}: window {_window(r)}"
    if r.get("window") is not None:
        tokens = r.get("window_tokens") or []
        if len(tokens) == 2 and all(math.isfinite(t) for t in tokens):
            text += f" ({tokens[0] / 1e6:.1f}M-{tokens[1] / 1e6:.1f}M tokens)"
        text += (
            f", ICL {r['icl_score_before']:+.2f} -> {r['icl_score_window_end']:+.2f} across it, "
            f"{r['icl_score_after']:+.2f} at the end"
        )
    jump = r.get("prefix_matching_jump_step", math.nan)
    if math.isfinite(jump):
        text += f", prefix matching >= 0.3 at {jump:.0f}"
    if r.get("loss_gap_window"):
        text += f", loss bump {_span(r['loss_gap_window'])}"
    return text


def _smeared(runs: dict) -> tuple[str, str]:
    if "smeared_1l" not in runs:
        return "not run", "not run"
    s1 = runs["smeared_1l"]
    ok1 = bool(s1["induction_heads"]) and _has_phase_change(s1)
    text = (
        f"smeared 1L: {', '.join(s1['induction_heads']) or 'no induction head'}, ICL window "
        f"{_window(s1)} (fall {-_fall(s1):.2f} nats)"
    )
    earlier = None
    if "smeared_2l" in runs and "2l" in runs:
        a, b = runs["smeared_2l"], runs["2l"]
        ja, jb = a["prefix_matching_jump_step"], b["prefix_matching_jump_step"]
        earlier = math.isfinite(ja) and (not math.isfinite(jb) or ja < jb)
        text += f"; prefix matching >= 0.3: smeared 2L at {ja:.0f}, 2L at {jb:.0f}"
    if earlier is None:
        return text, "partly" if ok1 else "differs"
    return text, "reproduced" if ok1 and earlier else ("partly" if ok1 or earlier else "differs")


def _ablation(runs: dict) -> tuple[str, str]:
    done = {k: r for k, r in runs.items() if "icl_removed_by_ablation" in r}
    if not done:
        return "no induction heads to ablate", "not run"
    parts, good = [], 0
    for k, r in done.items():
        removed, control = r["icl_removed_by_ablation"], r.get("icl_removed_by_control", math.nan)
        parts.append(
            f"{LABELS[k]}: {', '.join(r['induction_heads'])} remove {removed:.0%} "
            f"(control {', '.join(r.get('control_heads', [])) or 'none'}: {control:.0%})"
        )
        good += removed > 0.5 and not (control >= removed / 2)
    return "; ".join(parts), _grade(good == len(done), good > 0)


def _attribution(runs: dict) -> tuple[str, str]:
    """Per run with a phase change: the head whose ablation undoes most of it is an induction
    head of the snapshot at the window's end (detect there)."""
    done = {k: r for k, r in runs.items() if r.get("attribution")}
    if not done:
        return "not run", "not run"
    parts, good = [], 0
    for k, r in done.items():
        top = max(r["attribution"], key=r["attribution"].get)
        at = r.get("attribution_heads", {})
        heads = at.get("induction", [])
        parts.append(
            f"{LABELS[k]}: largest {top} {r['attribution'][top]:.2f} (detect at step "
            f"{at.get('step', '?')}: {', '.join(heads) or 'no induction head'})"
        )
        good += top in heads
    text = "; ".join(parts) + " (share of the phase change's per-token improvement undone)"
    return text, _grade(good == len(done), good > 0)
