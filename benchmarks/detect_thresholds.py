"""Where detect's default thresholds come from: score distributions of heads that are not
induction heads (randomly initialised models) vs heads that are (trained demo models, the
hand-built circuit). Prints the measured ranges and appends them to RESULTS.md.

`--smoke` runs the same code on 1 seed per architecture, one demo model trained for 5 steps
and the first and last shipped checkpoints, and prints the tables without appending them to
RESULTS.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from _common import emit

import inducthead as ih
from inducthead.analysis import detect
from inducthead.model import induction_circuit

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "demo"


def random_models(n_seeds: int = 5):
    """Untrained models of the architectures we ship, 5 seeds each."""
    demo = ih.configs.get("demo").model
    small = ih.configs.get("olsson-attn-only-2l-small").model
    mlp = ih.HookedTransformerConfig(
        n_layers=3,
        d_model=128,
        n_heads=4,
        d_head=32,
        d_vocab=512,
        n_ctx=128,
        bos_token_id=0,
        model_name="3L-LN-MLP",
    )
    for cfg in (demo, small, mlp):
        for seed in range(n_seeds):
            yield f"{cfg.model_name} seed {seed}", ih.HookedTransformer(cfg.replace(seed=seed))


def trained_models(seeds=(1, 2), steps: int | None = None):
    yield "demo seed 0 (assets)", ih.load(ASSETS)
    for seed in seeds:
        preset = ih.configs.get("demo").with_seed(seed)
        cfg = preset.train.replace(progress=False, device="cpu")
        run = ih.train(
            ih.HookedTransformer(preset.model),
            preset.make_task(),
            cfg if steps is None else cfg.replace(steps=steps),
        )
        yield f"demo seed {seed}", run.model


def summarise(name, report, layer_from=1):
    s = report.scores
    pm = s["prefix_matching"][layer_from:]
    return {
        "model": name,
        "max PM (L>=1)": pm.max().item(),
        "max |copy emp|": s["copying_empirical"].abs().max().item(),
        "max prev": s["previous_token"].max().item(),
        "max dup": s["duplicate_token"].max().item(),
        "induction": [f"L{l}H{h}" for l, h in report.induction_heads],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="toy size, print only (tests)")
    args = parser.parse_args(argv)
    n_seeds, seeds, steps = (1, (1,), 5) if args.smoke else (5, (1, 2), None)
    rows = [summarise(n, detect(m)) for n, m in random_models(n_seeds)]
    random_pm = max(r["max PM (L>=1)"] for r in rows)
    random_copy = max(r["max |copy emp|"] for r in rows)
    random_prev = max(r["max prev"] for r in rows)
    random_dup = max(r["max dup"] for r in rows)
    trained = []
    for name, model in trained_models(seeds, steps):
        rep = detect(model)
        heads = rep.induction_heads
        trained.append(
            (
                name,
                min(rep.scores["prefix_matching"][h].item() for h in heads) if heads else None,
                min(rep.scores["copying_empirical"][h].item() for h in heads) if heads else None,
                rep.scores["previous_token"][0].max().item(),
            )
        )
    hand = detect(induction_circuit()[0])
    lines = [
        "Untrained models (no induction heads):",
        "",
        "| model | max prefix matching (layers >= 1) | max abs empirical copying | max previous-token | max duplicate-token |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['model']} | {r['max PM (L>=1)']:.3f} | {r['max |copy emp|']:.3f} | {r['max prev']:.3f} | {r['max dup']:.3f} |"
        for r in rows
    ]
    lines += [
        "",
        "Trained demo models (induction heads found with the default thresholds):",
        "",
        "| model | min PM of induction heads | min empirical copying of induction heads | max L0 previous-token |",
        "|---|---|---|---|",
    ]
    lines += [f"| {n} | {_f(pm)} | {_f(cp)} | {pv:.3f} |" for n, pm, cp, pv in trained]
    lines += [
        "",
        "Shipped demo trajectory (assets/demo): best layer-1 head by step",
        "",
        "| step | best L1 prefix matching | its empirical copying | induction heads |",
        "|---|---|---|---|",
    ]
    run = ih.Run(ASSETS)
    checkpoints = run.checkpoints
    for step in [checkpoints[0], checkpoints[-1]] if args.smoke else checkpoints:
        rep = detect(run.load(step))
        pm = rep.scores["prefix_matching"][1]
        h = int(pm.argmax())
        lines.append(
            f"| {step} | {pm[h]:.3f} | {rep.scores['copying_empirical'][1, h]:.3f} | "
            f"{', '.join(f'L{a}H{b}' for a, b in rep.induction_heads) or '-'} |"
        )
    lines += [
        "",
        f"Hand-built circuit: induction {hand.induction_heads}, anti-induction "
        f"{hand.anti_induction_heads}, previous-token {hand.previous_token_heads}, duplicate "
        f"{hand.duplicate_token_heads}",
        "",
        f"Untrained maxima: prefix matching {random_pm:.3f}, |copying| {random_copy:.3f}, "
        f"previous-token {random_prev:.3f}, duplicate-token {random_dup:.3f}.",
    ]
    emit("Detection thresholds (benchmarks/detect_thresholds.py)", lines, save=not args.smoke)


def _f(score: float | None) -> str:
    """A score to 3 decimals; '-' for a model without induction heads (a --smoke model)."""
    return "-" if score is None else f"{score:.3f}"


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
