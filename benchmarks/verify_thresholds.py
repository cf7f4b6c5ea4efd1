"""Where verify's default thresholds come from: the statistics of checks (a)-(c) for heads that
are not induction heads (untrained models; the shipped demo run before its induction heads form)
and for heads that are (the demo run after they form, the hand-built circuit).

Prints a table; `--record` appends it to RESULTS.md. `--smoke` runs the same code on 1 seed per
preset, the first and last shipped checkpoints and a smaller hand-built circuit, with 8 sequences
instead of 64, and never records (tests).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from _common import record

import inducthead as ih
from inducthead.analysis import detect, head_label
from inducthead.causal import default_data, path_patch, verify
from inducthead.model import induction_circuit

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "demo"


def row(name: str, model, heads, n_samples: int | None = None) -> list[str]:
    """One table line per head: (a) share, (b) specificity, (c) drop and recoveries. For (c)
    the sender is the strongest layer-0 previous-token head even when detect finds none.
    `n_samples`: sequences of `default_data` (None: its default, 64)."""
    data = None if n_samples is None else default_data(model, n_samples=n_samples)
    report = verify(model, heads=heads, data=data)
    det = detect(model)
    sender = (0, int(det.scores["previous_token"][0].argmax()))
    lines = []
    for head in report.candidates:
        r = report.rows[head]
        k = path_patch(model, sender, head, "k", clean=data, metric="loss")
        q = path_patch(model, sender, head, "q", clean=data, metric="loss")
        drop = k.attention["clean"] - k.attention["corrupted"]
        lines.append(
            f"| {name} | {head_label(head)} | {report.clean['loss']:.3f} | "
            f"{report.baseline['loss']:.3f} | {r['loss_effect']:+.4f} | {r['loss_share']:.4f} | "
            f"{r['specificity']:.2f} | {head_label(sender)} | "
            f"{k.attention['clean']:.3f} | {drop:.3f} | {k.attention_recovered:.3f} | "
            f"{q.attention_recovered:.3f} | {'yes' if head in report.confirmed else 'no'} |"
        )
    if report.joint:
        j = report.joint
        lines.append(
            f"| {name} | all ablated | | | {j['loss_effect']:+.4f} | {j['loss_share']:.4f} | "
            f"{j['specificity']:.2f} | | | | | | accuracy share {j['accuracy_share']:.3f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", action="store_true", help="append the table to RESULTS.md")
    parser.add_argument("--smoke", action="store_true", help="toy size, print only (tests)")
    args = parser.parse_args(argv)
    n_samples = 8 if args.smoke else None
    lines = [
        "| model | head | clean loss | baseline loss | (a) loss effect | (a) share | (b) "
        "specificity | sender | prefix matching | (c) drop | (c) key recovery | query recovery "
        "| confirmed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    layer1 = lambda cfg: [(1, h) for h in range(cfg.n_heads)]  # noqa: E731
    for preset in ("demo", "olsson-attn-only-2l-small"):
        cfg = ih.configs.get(preset).model
        for seed in range(1 if args.smoke else 3):
            model = ih.HookedTransformer(cfg.replace(seed=seed)).eval()
            lines += row(f"untrained {preset} seed {seed}", model, layer1(cfg), n_samples)
    run = ih.Run(ASSETS)
    checkpoints = run.checkpoints
    for step in [checkpoints[0], checkpoints[-1]] if args.smoke else checkpoints:
        model = run.load(step).eval()
        lines += row(f"demo step {step}", model, layer1(model.cfg), n_samples)
    hand, roles = induction_circuit(d_vocab=32, n_ctx=64) if args.smoke else induction_circuit()
    lines += row("hand-built", hand, [roles.induction, roles.positional_shortcut], n_samples)
    for line in lines:
        print(line)
    if args.record and not args.smoke:
        record("Verify thresholds (benchmarks/verify_thresholds.py)", lines)


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
