from __future__ import annotations

from pathlib import Path

import pytest
import torch

import inducthead as ih

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def tiny_config(**overrides) -> ih.HookedTransformerConfig:
    base = dict(n_layers=2, d_model=32, n_heads=4, d_head=8, d_vocab=23, n_ctx=24, seed=0)
    base.update(overrides)
    return ih.HookedTransformerConfig(**base)


def perturbed(
    model: ih.HookedTransformer, scale: float = 0.2, seed: int = 1
) -> ih.HookedTransformer:
    """Give every parameter (biases and norm weights included) a random non-trivial value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model


@pytest.fixture(scope="session")
def demo_model() -> ih.HookedTransformer:
    """The demo preset trained for 800 steps (shipped in assets/, made by `make assets`)."""
    return ih.load(ASSETS / "demo" / "model.safetensors")
