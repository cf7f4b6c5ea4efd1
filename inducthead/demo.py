"""What `inducthead demo` prints after training: per-head scores on periods never trained on."""

from __future__ import annotations

from pathlib import Path

import torch

from inducthead import scores
from inducthead.results import head_label
from inducthead.tasks import RepeatedTokens

# A head whose held-out prefix-matching and previous-token scores pass 0.5 attends mostly to the
# induction / previous-token target: the demo's acceptance bar (foundation issue, section 5).
DEMO_BAR = 0.5


def held_out_scores(model, task: RepeatedTokens, n_samples: int = 10) -> dict[int, torch.Tensor]:
    """Prefix matching `[n_layers, n_heads]` at each held-out period (as many repeats as fit)."""
    cfg, out = model.cfg, {}
    for period in task.held_out_periods:
        repeats = scores.probe_fit(cfg.n_ctx, period, 4, cfg.bos_token_id is not None)
        if repeats >= 2:
            out[period] = scores.prefix_matching_score(model, period, repeats, n_samples, seed=1)
    return out


def summary(model, task: RepeatedTokens, seconds: float, out_dir: Path | None = None) -> str:
    """A per-head table and the verdicts, as printed by `inducthead demo`."""
    from inducthead.detect import detect
    from inducthead.verify import verify

    pm = held_out_scores(model, task)
    report = detect(model)
    prev = report.scores["previous_token"]
    cfg = model.cfg
    periods = list(pm)
    lines = [
        f"trained {cfg.model_name!r} in {seconds:.1f} s" + (f" -> {out_dir}" if out_dir else ""),
        "",
        "prefix matching on held-out periods (never trained on), copying and previous-token:",
        "head  " + "".join(f"  p={p:<4}" for p in periods) + "  copying  prev-token",
    ]
    for l in range(cfg.n_layers):
        for h in range(cfg.n_heads):
            cells = "".join(f"  {pm[p][l, h].item():6.3f}" for p in periods)
            copy = report.scores["copying_empirical"][l, h].item()
            lines.append(f"{head_label((l, h))}  {cells}  {copy:7.3f}  {prev[l, h].item():9.3f}")
    worst_pm = torch.stack([pm[p] for p in periods]).min(0).values
    held_out = [
        head_label((l, h))
        for l in range(1, cfg.n_layers)
        for h in range(cfg.n_heads)
        if worst_pm[l, h] >= DEMO_BAR
    ]
    causal = verify(model)
    confirmed = ", ".join(head_label(h) for h in causal.confirmed) or "none"
    lines += [
        "",
        f"prefix matching >= {DEMO_BAR} at every held-out period: {', '.join(held_out) or 'none'}",
        "inducthead.detect:",
        *(f"  {line}" for line in report.summary_lines()[:4]),
        f"inducthead.verify: causal role confirmed for {confirmed} (clean loss "
        f"{causal.clean['loss']:.3f}, no-context baseline {causal.baseline['loss']:.3f}; run "
        "`inducthead verify RUN_DIR` for the evidence)",
    ]
    return "\n".join(lines)
