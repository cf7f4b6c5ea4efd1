"""Where verify's default thresholds come from: the statistics of checks (a)-(c) for heads that
are not induction heads (untrained models; the shipped demo run before its induction heads form)
and for heads that are (the demo run after they form, the hand-built circuit); and, for check (a)
applied jointly, heads that share the job: a 2-layer LayerNorm/MLP/rotary model with 4 heads of
16 whose layer-1 heads are redundant induction heads, and the hand-built circuit with a copy of
its induction head, next to sets of heads that are not induction heads ablated together.

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
from inducthead.causal import ablate, default_data, no_context_baseline, path_patch, verify
from inducthead.causal.metrics import METRICS, evaluate, forward
from inducthead.model import induction_circuit
from inducthead.tasks import RepeatedTokens

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


def shared_rows(name: str, model, heads, data) -> list[str]:
    """Check (a) alone and jointly for `heads` (verify's redundant-set search)."""
    report = verify(model, heads=heads, data=data)
    lines = []
    for head in report.candidates:
        r = report.rows[head]
        lines.append(
            f"| {name} | {head_label(head)} | {r['loss_share']:.4f} | "
            f"{', '.join(map(head_label, r['redundant_with'])) or '-'} | {r['joint_share']:.4f} | "
            f"{'yes' if head in report.confirmed else 'no'} |"
        )
    return lines


def joint_share(model, heads, data) -> float:
    """Share of the gap to the no-context baseline that ablating `heads` together opens."""
    clean = evaluate(METRICS, forward(model, data.tokens), data)["loss"]
    hooks = ablate(model, heads, "pattern_preserving").hooks_for(data.tokens)
    ablated = evaluate(METRICS, forward(model, data.tokens, hooks), data)["loss"]
    return (ablated - clean) / (no_context_baseline(data)["loss"] - clean)


def redundant_model(steps: int):
    """The 2-layer model with LayerNorm, MLPs, rotary positions and 4 heads of 16, trained on
    RepeatedTokens (lr 3e-3, warmup 100): its four layer-1 heads share the induction job."""
    cfg = ih.HookedTransformerConfig(
        n_layers=2,
        d_model=64,
        n_heads=4,
        d_head=16,
        d_vocab=64,
        n_ctx=128,
        normalization_type="LN",
        positional_embedding_type="rotary",
        bos_token_id=0,
        embed_init_std=1.0,
        seed=0,
        model_name="ln-mlp-rotary-4x16",
    )
    task = RepeatedTokens(d_vocab=64, seq_len=128, bos_token_id=0)
    recipe = ih.TrainConfig(
        steps=steps, batch_size=32, lr=3e-3, warmup_steps=min(100, steps), progress=False
    )
    untrained = ih.HookedTransformer(cfg).eval()
    return ih.train(ih.HookedTransformer(cfg), task, recipe).model.eval(), untrained


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
    lines += [
        "",
        "Check (a) jointly: heads that share the job (verify's minimal jointly-passing sets) and "
        "sets of heads that do not, ablated together (pattern-preserving, share of the gap):",
        "",
        "| model | head | (a) share alone | shares the job with | joint share | confirmed |",
        "|---|---|---|---|---|---|",
    ]
    trained, untrained = redundant_model(20 if args.smoke else 2000)
    data = default_data(trained, n_samples=n_samples or 64)
    lines += shared_rows("ln-mlp-rotary trained", trained, layer1(trained.cfg), data)
    lines += shared_rows("ln-mlp-rotary untrained", untrained, layer1(untrained.cfg), data)
    copy, roles = induction_circuit(d_vocab=24, n_ctx=64, redundant=True, induction_strength=14)
    period13 = RepeatedTokens(24, 64, 13, 13, held_out_periods=()).sample(n_samples or 64, seed=0)
    heads = [roles.induction, roles.redundant_induction, roles.positional_shortcut]
    lines += shared_rows("hand-built with a copy", copy, heads, period13)
    previous = int(detect(trained).scores["previous_token"][0].argmax())
    others = [(0, h) for h in range(trained.cfg.n_heads) if h != previous]
    final = run.load(checkpoints[-1]).eval()
    demo_data = default_data(final, n_samples=n_samples or 64)
    lines += [
        "",
        "| not induction heads, ablated together | joint share |",
        "|---|---|",
        f"| ln-mlp-rotary trained: layer-0 heads but the previous-token head "
        f"({', '.join(map(head_label, others))}) | {joint_share(trained, others, data):.4f} |",
        f"| demo step {checkpoints[-1]}: L0H1 | {joint_share(final, [(0, 1)], demo_data):.4f} |",
        f"| hand-built with a copy: shortcut + one copy (L1H2, L1H3) | "
        f"{joint_share(copy, [(1, 2), (1, 3)], period13):.4f} |",
    ]
    for line in lines:
        print(line)
    if args.record and not args.smoke:
        record("Verify thresholds (benchmarks/verify_thresholds.py)", lines)


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
