"""`chen-standard`: Chen et al. 2024's n-gram Markov data (S 3, L 100, parents -1 and -2,
Dirichlet 0.1) for a standard transformer, our HookedTransformer: 2 attention-only layers with
3 heads, learned positions, scored at every position with two tokens of context. The paper's
own GIH model is not a HookedTransformer (its layer 2 reads one query slot through a
polynomial selector): `inducthead.papers.chen.GIHModel`. PROVISIONAL sizes (ours, CPU-sized)."""

from __future__ import annotations

from inducthead.model import HookedTransformerConfig
from inducthead.presets.registry import Preset, register
from inducthead.recipe import TrainConfig
from inducthead.tasks import NGramMarkovICL


def chen_standard() -> Preset:
    task = NGramMarkovICL(n_states=3, seq_len=100, order=2, alpha=0.1, final_only=False)
    model = HookedTransformerConfig(
        n_layers=2,
        d_model=48,
        n_heads=3,
        d_head=16,
        d_vocab=task.d_vocab,
        n_ctx=task.seq_len,
        attn_only=True,
        normalization_type=None,
        positional_embedding_type="standard",
        seed=0,
        model_name="chen-standard",
    )
    recipe = TrainConfig(steps=2000, batch_size=64, lr=3e-3, n_checkpoints=20)
    notes = [
        "From the paper and the authors' code: the data (S 3, L 100, parents {-1, -2}, "
        "Dirichlet 0.1 tables per sequence).",
        "Our choice (provisional): a standard transformer for comparison, its sizes and recipe.",
    ]
    return Preset(
        "chen-standard",
        model,
        task.to_dict(),
        recipe,
        "2-layer attention-only transformer on in-context trigram chains (Chen et al. 2024 data)",
        "Chen et al. 2024, Unveiling Induction Heads (NeurIPS 2024)",
        notes,
    )


register(chen_standard())
