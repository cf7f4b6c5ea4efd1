from __future__ import annotations

import os

# Tests never touch the network: Hugging Face libraries read these at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import inducthead as ih  # noqa: E402
from inducthead.testing import tiny_gpt2  # noqa: E402

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


@pytest.fixture
def one_cpu_thread():
    """Tiny models run fastest on one thread, and far faster on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def demo_model() -> ih.HookedTransformer:
    """The demo preset trained for 800 steps (shipped in assets/, made by `make assets`)."""
    return ih.load(ASSETS / "demo" / "model.safetensors")


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    """A 2-layer GPT-2 made with `transformers`, saved with its tokenizer to a temp directory."""
    return tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def tl3_reference(tmp_path_factory):
    """What TransformerLens 3.9 computed on every case of tests/tl3_cases.py: one subprocess in
    `.venv-tl3` for the session, shared by test_tl3_differential.py and
    test_tl3_api_differential.py (which skip at import when the venv cannot be made)."""
    import tl3_cases

    yield tl3_cases.run_reference(tmp_path_factory.mktemp("tl3"))
    tl3_cases.write_report()
