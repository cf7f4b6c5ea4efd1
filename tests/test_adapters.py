import types

import pytest
import torch
from conftest import perturbed, tiny_config

import inducthead as ih
from inducthead.analysis import ModelAdapter
from inducthead.model import induction_circuit


class LegacyHookedTransformer(torch.nn.Module):
    """Stands in for a TransformerLens 3 HookedTransformer: same attribute names, its own class,
    a tokenizer with a BOS token and `default_prepend_bos` (nothing from TL 3 is imported)."""

    def __init__(self, inner: ih.HookedTransformer):
        super().__init__()
        self.inner = inner
        self.cfg = types.SimpleNamespace(**{**inner.cfg.to_dict(), "default_prepend_bos": True})
        self.tokenizer = types.SimpleNamespace(bos_token_id=0)
        self.hook_dict = inner.hook_dict

    def run_with_cache(self, *args, **kwargs):
        return self.inner.run_with_cache(*args, **kwargs)

    def __getattr__(self, name):
        if name.startswith(("W_", "b_")) or name == "ln_final":
            return getattr(self._modules["inner"], name)
        return super().__getattr__(name)


def test_duck_typed_transformerlens3_models_work():
    model, roles = induction_circuit()
    legacy = LegacyHookedTransformer(model)
    adapter = ModelAdapter.wrap(legacy)
    assert adapter.kind == "transformer_lens" and adapter.bos_token_id == 0
    ours, theirs = ih.detect(model), ih.detect(legacy)
    for key in ours.scores:
        torch.testing.assert_close(theirs.scores[key], ours.scores[key], equal_nan=True)
    assert theirs.induction_heads == [roles.induction]


def test_adapter_views_and_forward():
    model, _ = induction_circuit()
    adapter = ModelAdapter.wrap(model)
    assert (adapter.n_layers, adapter.n_heads, adapter.d_vocab, adapter.bos_token_id) == (
        2,
        4,
        40,
        0,
    )
    assert adapter.W_Q.shape == (2, 4, model.cfg.d_model, model.cfg.d_head)
    tokens = torch.randint(1, 40, (5, 30))
    names = [adapter.pattern_hook(1), adapter.z_hook(0)]
    whole = adapter.run(tokens, names)
    chunked = adapter.run(tokens, names, batch_size=2)
    assert set(whole) == set(names) and whole[names[0]].shape == (5, 4, 30, 30)
    for name in names:
        torch.testing.assert_close(whole[name], chunked[name])
    assert "handbuilt-induction" in repr(adapter)


def test_bos_override_and_validation():
    model, _ = induction_circuit()
    assert ModelAdapter.wrap(model, bos_token_id=None).bos_token_id is None
    assert ModelAdapter.wrap(model, bos_token_id=3).bos_token_id == 3
    with pytest.raises(ValueError, match="bos_token_id"):
        ModelAdapter.wrap(model, bos_token_id=99)


def test_direct_unembed_folds_layernorm_weight():
    cfg = ih.HookedTransformerConfig(n_layers=1, d_model=8, n_heads=2, d_head=4, d_vocab=5, n_ctx=6)
    model = ih.HookedTransformer(cfg)
    with torch.no_grad():
        model.ln_final.w.copy_(torch.arange(1.0, 9.0))
    U = ModelAdapter.wrap(model).direct_unembed()
    expected = torch.arange(1.0, 9.0)[:, None] * model.W_U
    torch.testing.assert_close(U, expected - expected.mean(0, keepdim=True))


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(
    "call",
    [
        lambda m: ih.detect(m),
        lambda m: ih.verify(m),
        lambda m: ih.ablation_scan(m),
        lambda m: ih.induction_score(m),
    ],
    ids=["detect", "verify", "ablation_scan", "induction_score"],
)
def test_a_public_function_wraps_the_model_once(call, demo_model, monkeypatch):
    """Convert at the boundary: the adapter made once is handed down (verify runs detect, the
    ablation scan and patching on it)."""
    real = ModelAdapter.wrap.__func__
    calls = []

    def counting(cls, *args, **kwargs):
        calls.append(args[0] if args else kwargs.get("model"))
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(ModelAdapter, "wrap", classmethod(counting))
    call(demo_model)
    assert len(calls) == 1


@pytest.mark.parametrize("host", ["ours", "bridge"])
@pytest.mark.parametrize(
    "names, stop",
    [
        (["blocks.1.attn.hook_pattern", "blocks.0.attn.hook_z", "blocks.1.attn.hook_z"], "z"),
        (["blocks.1.attn.hook_q", "blocks.0.hook_mlp_out"], "z"),
        (["blocks.1.attn.hook_pattern", "blocks.1.hook_attn_out"], "attn_out"),
        (["blocks.0.attn.hook_z", "blocks.1.hook_resid_mid"], "resid_post"),
        (["blocks.1.hook_resid_post"], "resid_post"),
    ],
)
def test_the_cached_forward_stops_after_the_last_name_and_caches_all_of_them(host, names, stop):
    """`run` ends the pass early (at the last block's hook_z, hook_attn_out or hook_resid_post,
    whichever is the first after every name) and returns exactly what a full cached run does."""
    model = perturbed(ih.HookedTransformer(tiny_config(d_vocab=40, n_ctx=30)).eval())
    hosted = model if host == "ours" else ih.to_bridge(model).eval()
    adapter = ModelAdapter.wrap(hosted, bos_token_id=None)
    tokens = torch.randint(0, 40, (3, 30))
    fired = []
    later = {"z": "blocks.1.hook_attn_out", "attn_out": "blocks.1.hook_resid_mid"}.get(stop)
    hooks = [(later, lambda x, hook: fired.append(hook.name))] if later else []
    with hosted.hooks(fwd_hooks=hooks):
        cache = adapter.run(tokens, names)
    _, full = hosted.run_with_cache(tokens, names_filter=names)
    assert set(cache) == set(names)
    for name in names:
        torch.testing.assert_close(cache[name], full[name], rtol=0, atol=0)
    assert fired == []  # nothing after the stop point ran
