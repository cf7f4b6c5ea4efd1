"""detect() vs TransformerLens detect_head, side by side in one run (detection issue).

For a 2-layer and a 12-layer width-768 model (random weights, GPT-2-like: LayerNorm, MLP, 12
heads, vocabulary 2048 from a locally built word-level tokenizer), time:
- `inducthead.detect(model)`: every score (prefix matching at two periods, previous-token,
  duplicate-token, empirical and eigenvalue copying, K-composition);
- the forward pass detect needs alone (every layer's pattern and head outputs, up to the last
  attention): the floor for any implementation of these scores;
- TransformerLens `detect_head(bridge, seqs, "induction_head")` on the same 20 probe sequences
  (the same weights in a TransformerBridge), which computes the attention statistic only.
Each is timed best of 3 after a warm-up, the four taking turns in every round. The last ratio,
detect_head over the forward alone, bounds the speed-up any detect computing these scores on this
machine can reach. TL's 'mul' number is converted to ours (× sequence length / eligible queries)
to show both compute the same prefix-matching values. Goal: detect >= 2x faster than detect_head.

`--smoke` runs the same code on a 1-layer width-64 model (vocabulary 256), once per timing, and
prints the table without appending it to RESULTS.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from _common import emit

import inducthead as ih
from inducthead.analysis import ModelAdapter
from inducthead.tasks.probes import plan_probe, repeated_probe
from inducthead.testing import word_tokenizer

VOCAB = 2048
SIZES = dict(layers=(2, 12), d_model=768, n_heads=12, vocab=VOCAB, repeats=3)
SMOKE = dict(layers=(1,), d_model=64, n_heads=4, vocab=256, repeats=1)


def build(n_layers: int, tokenizer, d_model: int = 768, n_heads: int = 12, vocab: int = VOCAB):
    cfg = ih.HookedTransformerConfig(
        n_layers=n_layers,
        d_model=d_model,
        n_heads=n_heads,
        d_head=d_model // n_heads,
        d_vocab=vocab,
        n_ctx=128,
        act_fn="gelu_new",
        bos_token_id=0,
        seed=0,
        model_name=f"random-{n_layers}L-{d_model}",
    )
    model = ih.HookedTransformer(cfg).eval()
    return model, ih.to_bridge(model, tokenizer=tokenizer).eval()


def interleaved(contenders: dict, repeats: int) -> tuple[dict, dict]:
    """Best-of-`repeats` wall time of each contender, after a warm-up call each, the contenders
    taking turns within every round (so a slow spell of a shared machine hits all of them)."""
    outputs = {name: fn() for name, fn in contenders.items()}
    times = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}, outputs


def measure(layers, d_model, n_heads, vocab, repeats) -> list[str]:
    from transformer_lens.head_detector import detect_head

    lines = [
        "| model | detect (ours, all scores) s | its forward alone s | detect on the bridge s | "
        "TL detect_head (induction only) s | speed-up vs detect_head | bridge / ours | "
        "detect_head / forward alone | max abs diff of prefix matching |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = word_tokenizer(Path(tmp), vocab)
        for n_layers in layers:
            model, bridge = build(n_layers, tokenizer, d_model, n_heads, vocab)
            adapter = ModelAdapter.wrap(model)
            plan, _ = plan_probe(adapter.n_ctx, adapter.d_vocab, adapter.bos_token_id, 25, 4, 10, 0)
            probes = [
                repeated_probe(vocab, p, None, 10, 0, i, length=plan.length)
                for i, p in enumerate(plan.periods)
            ]
            texts = [[tokenizer.decode(row[1:]) for row in probe] for probe in probes]
            names = [adapter.pattern_hook(l) for l in range(n_layers)]
            names += [adapter.z_hook(l) for l in range(n_layers)]
            tokens = torch.cat(probes)

            def tl(b=bridge, texts=texts):
                return [detect_head(b, t, "induction_head", error_measure="mul") for t in texts]

            contenders = {
                "ours": lambda m=model: ih.detect(m),
                # the forward detect runs (patterns and head outputs of every layer, stopping
                # after the last attention): the floor any implementation of these scores pays
                "forward": lambda a=adapter, t=tokens, n=names: a.run(t, n),
                "bridge": lambda b=bridge: ih.detect(b, bos_token_id=0),
                "tl": tl,
            }
            times, outputs = interleaved(contenders, repeats)
            t_ours, t_forward, t_bridge, t_tl = (times[k] for k in contenders)
            report, theirs = outputs["ours"], outputs["tl"]
            diffs = []
            for period, tl_score in zip(plan.periods, theirs, strict=True):
                length = plan.length + 1
                eligible = plan.length - period
                converted = tl_score * length / eligible
                diffs.append(
                    (converted - report.scores[f"prefix_matching_p{period}"]).abs().max().item()
                )
            lines.append(
                f"| {n_layers}L d{d_model} | {t_ours:.2f} | {t_forward:.2f} | {t_bridge:.2f} | "
                f"{t_tl:.2f} | "
                f"{t_tl / t_ours:.2f}x | {t_bridge / t_ours:.2f} | {t_tl / t_forward:.2f} | "
                f"{max(diffs):.1e} |"
            )
            print(lines[-1], flush=True)
    lines += ["", f"threads: {torch.get_num_threads()}; 20 probe sequences of 101 tokens per model"]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="toy size, print only (tests)")
    args = parser.parse_args(argv)
    with torch.no_grad():
        lines = measure(**(SMOKE if args.smoke else SIZES))
    emit("Detection speed (benchmarks/detect_speed.py)", lines, save=not args.smoke)


if __name__ == "__main__":
    main()
