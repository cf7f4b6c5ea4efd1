"""Ablate attention heads of your model and measure what they do.

Runs as-is on the shipped demo model:  python tutorials/ablate_heads.py
For your own model, change MODEL (a run directory, a checkpoint file, or a Hugging Face model via
ih.load_pretrained) and HEADS.
"""

from pathlib import Path

import torch

import inducthead as ih
from inducthead.causal.data import default_data
from inducthead.causal.metrics import METRICS, evaluate, no_context_baseline

MODEL = Path(__file__).resolve().parent.parent / "assets" / "demo"
HEADS = None  # e.g. ["L1H0", "L1H1"]; None = the induction heads detect() finds

model = ih.load(MODEL).eval()  # or: ih.load_pretrained("gpt2"), a TransformerBridge
data = default_data(model, n_samples=32)  # repeated random tokens; or a Batch / token ids
report = ih.detect(model)
heads = HEADS or report.induction_heads
print(f"model: {model.cfg.model_name}, heads: {heads}")

# 1. The effect of ablating each head alone, [n_layers, n_heads] per metric.
for mode in ("zero", "pattern_preserving"):
    scan = ih.ablation_scan(model, data, ["loss", "accuracy"], mode=mode)
    print(scan)
    print(scan.to_dataframe()[["label", "delta_loss", "delta_accuracy"]].to_string(index=False))

# 2. Ablate the heads together: as a context manager ...
with torch.no_grad():
    clean = evaluate(METRICS, model(data.tokens), data)
    with ih.ablate(model, heads, mode="mean"):  # mean of hook_z over a reference batch
        ablated = evaluate(METRICS, model(data.tokens), data)
for name in METRICS:
    print(f"{name:>10}: {clean[name]:7.3f} -> {ablated[name]:7.3f}")
print("no-context baseline:", no_context_baseline(data))

# ... or as TransformerLens hooks, composable with your own.
hooks = ih.ablate(model, heads, mode="pattern_preserving").hooks_for(data.tokens)
logits = model.run_with_hooks(data.tokens, fwd_hooks=hooks)

# 3. In-context learning: loss late in the context minus loss early (negative = ICL).
print(f"ICL score {ih.icl_score(model, data):.3f}")
with ih.ablate(model, heads):
    print(f"ICL score with {len(heads)} heads zero-ablated {ih.icl_score(model, data):.3f}")

# 4. K-composition: the previous-token heads' output restored only into a head's key input.
senders = [h for h in report.previous_token_heads if heads and h[0] < heads[0][0]]
if senders:
    print(ih.path_patch(model, sender=senders, receiver=heads[0], via="k", clean=data))

# 5. All checks at once, with verdicts.
print(ih.verify(model, heads, data, detection=report))
