"""`wang-standard`: the token version of Wang et al. 2024's mixed target (`MixedTargetICL`:
the token two back with probability alpha* = 0.3, else the induction continuation) for a
standard transformer, our HookedTransformer: 2 attention-only layers x 2 heads, learned
positions, cross-entropy, AdamW. The paper's own model is six scalars on Gaussian vectors
(`inducthead.papers.wang`); this is the issue's check that a standard transformer shows the
same picture. PROVISIONAL (ours): the token task and the sizes, which are the demo recipe's
(N(0, 1) embeddings, lr 1e-2), CPU-sized: 600 steps in ~13 s on one core (measured)."""

from __future__ import annotations

from inducthead.presets.demo import demo
from inducthead.presets.registry import Preset, register
from inducthead.recipe import TrainConfig
from inducthead.tasks import MixedTargetICL


def wang_standard(alpha: float = 0.3) -> Preset:
    """The standard-transformer variant at 4-gram weight `alpha`."""
    task = MixedTargetICL(d_vocab=32, seq_len=64, alpha=alpha, lag=2, min_period=4, max_period=24)
    # the demo preset's architecture (N(0, 1) embeddings, no biases, BOS 0) at this vocabulary
    model = demo().model.replace(
        d_vocab=task.d_vocab, n_ctx=task.seq_len, model_name="wang-standard"
    )
    # the induction part falls near step 225 (measured, seed 0): checkpoints every 25 steps
    # resolve the 4-gram fit (~100), the plateau and the fall
    recipe = TrainConfig(
        steps=600,
        batch_size=32,
        lr=1e-2,
        betas=(0.9, 0.98),
        eval_every=25,
        checkpoint_steps=tuple(range(0, 601, 25)),
    )
    notes = [
        "From the paper: the mixed target (a 4-gram part x_{L-2} with weight alpha*, an "
        "in-context 2-gram part), a two-layer attention-only model.",
        "Our choice (provisional): tokens and cross-entropy instead of Gaussian vectors and the "
        "squared loss, the sizes, AdamW 1e-2 (the demo recipe).",
    ]
    return Preset(
        "wang-standard",
        model,
        task.to_dict(),
        recipe,
        "2-layer attention-only transformer on the mixed 4-gram / induction target (Wang et al. "
        "2024, token version)",
        "Wang et al. 2024, How Transformers Implement Induction Heads (arXiv 2410.11474)",
        notes,
    )


register(wang_standard())
