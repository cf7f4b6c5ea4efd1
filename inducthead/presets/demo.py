"""The `demo` preset: the recipe `make demo` trains."""

from __future__ import annotations

from inducthead.model import HookedTransformerConfig
from inducthead.presets.registry import Preset, register
from inducthead.recipe import TrainConfig
from inducthead.tasks import from_dict


def demo() -> Preset:
    """2-layer attention-only model that forms an induction head on a laptop CPU in seconds."""
    # Measured recipe (benchmarks/demo_emergence.py, numbers in benchmarks/RESULTS.md): every
    # choice below speeds up emergence on 2 CPU cores; a large vocab, many narrow heads, loss on
    # all positions, low lr or small embedding init each delay it.
    model = HookedTransformerConfig(
        n_layers=2,
        d_model=64,
        n_heads=2,
        d_head=32,
        d_vocab=64,
        n_ctx=128,
        attn_only=True,
        normalization_type=None,
        positional_embedding_type="standard",
        use_bias=False,
        embed_init_std=1.0,
        bos_token_id=0,
        seed=0,
        model_name="demo",
    )
    task = {
        "name": "repeated_tokens",
        "d_vocab": 64,
        "seq_len": 128,
        "min_period": 4,
        "max_period": 40,
        "held_out_periods": [13, 25, 37],
        "bos_token_id": 0,
    }
    recipe = TrainConfig(
        steps=800,
        batch_size=32,
        lr=1e-2,
        betas=(0.9, 0.98),
        weight_decay=0.0,
        grad_clip=None,
        eval_every=25,
        seed=0,
    )
    return Preset(
        "demo",
        model,
        from_dict(task).to_dict(),
        recipe,
        "2-layer attention-only model that forms a real induction head on a laptop CPU in seconds",
        "this project (recipe measured with benchmarks/demo_emergence.py)",
    )


register(demo())
