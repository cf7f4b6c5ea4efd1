import pytest
import torch
from conftest import perturbed, tiny_config

import inducthead as ih


@pytest.mark.parametrize(
    "overrides",
    [
        dict(attn_only=True, normalization_type=None),
        dict(attn_only=True, normalization_type=None, use_bias=False),
        dict(normalization_type="LN", act_fn="gelu_new"),
        dict(normalization_type="RMS", act_fn="silu"),
        dict(normalization_type="LNPre", act_fn="relu"),
        dict(normalization_type="RMSPre", attn_only=True),
        dict(positional_embedding_type="rotary"),
        dict(positional_embedding_type="rotary", rotary_dim=4, rotary_adjacent_pairs=True),
        dict(positional_embedding_type="rotary", rotary_dim=6),
        dict(positional_embedding_type="none", attn_only=True),
        dict(use_attn_scale=False, attn_only=True, normalization_type=None),
        dict(d_vocab_out=11, attn_only=True),
    ],
)
def test_bridge_has_equal_logits_and_patterns(overrides):
    model = perturbed(ih.HookedTransformer(tiny_config(**overrides)))
    bridge = ih.to_bridge(model)
    toks = torch.randint(
        model.cfg.d_vocab, (3, model.cfg.n_ctx), generator=torch.Generator().manual_seed(0)
    )
    ours, our_cache = model.run_with_cache(toks)
    theirs, their_cache = bridge.run_with_cache(toks)
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
    for l in range(model.cfg.n_layers):
        name = f"blocks.{l}.attn.hook_pattern"
        torch.testing.assert_close(their_cache[name], our_cache[name], atol=1e-5, rtol=1e-5)
    if model.cfg.positional_embedding_type != "rotary":  # rotary reorders q/k features
        torch.testing.assert_close(
            their_cache["blocks.0.attn.hook_z"],
            our_cache["blocks.0.attn.hook_z"],
            atol=1e-5,
            rtol=1e-5,
        )


def test_bridge_weight_views_match():
    model = perturbed(ih.HookedTransformer(tiny_config(attn_only=True, normalization_type=None)))
    bridge = ih.to_bridge(model)
    torch.testing.assert_close(bridge.W_V, model.W_V)
    torch.testing.assert_close(bridge.W_O, model.W_O)
    torch.testing.assert_close(bridge.W_E, model.W_E)


@pytest.mark.parametrize("pos", ["shortformer", "relative", "alibi"])
def test_unsupported_positions_raise_a_clear_error(pos):
    model = ih.HookedTransformer(tiny_config(positional_embedding_type=pos))
    with pytest.raises(ValueError, match=f"{pos}.*no TransformerBridge equivalent"):
        ih.to_bridge(model)


def test_to_bridge_rejects_other_objects():
    with pytest.raises(TypeError, match="HookedTransformer"):
        ih.to_bridge(torch.nn.Linear(2, 2))


def test_transformerlens_patching_runs_on_our_model_and_matches_the_bridge():
    from transformer_lens import patching

    model = perturbed(ih.HookedTransformer(tiny_config(attn_only=True, normalization_type=None)))
    model.eval()
    assert model.cfg.device == "cpu"
    bridge = ih.to_bridge(model).eval()
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(model.cfg.d_vocab, (2, 8), generator=g)
    corrupted = torch.randint(model.cfg.d_vocab, (2, 8), generator=g)

    def metric(logits):
        return logits[:, -1, 0].mean()

    results = []
    for m in (model, bridge):
        _, cache = m.run_with_cache(clean)
        results.append(patching.get_act_patch_attn_head_out_all_pos(m, corrupted, cache, metric))
    assert results[0].shape == (2, 4)
    torch.testing.assert_close(results[0], results[1], atol=1e-5, rtol=1e-5)


def test_analyses_of_a_bridge_match_the_model_it_was_made_from(demo_model):
    bridge = ih.to_bridge(demo_model)
    ours, theirs = ih.detect(demo_model), ih.detect(bridge)
    assert theirs.model_name == ours.model_name == "demo"
    assert theirs.probe["bos_token_id"] == ours.probe["bos_token_id"] == 0
    for key in ours.scores:
        torch.testing.assert_close(
            theirs.scores[key], ours.scores[key], atol=1e-5, rtol=0, equal_nan=True
        )
    data = ih.causal.default_data(demo_model, n_samples=16)
    a, b = ih.verify(demo_model, data=data), ih.verify(bridge, data=data)
    assert a.confirmed == b.confirmed and b.clean["loss"] == pytest.approx(
        a.clean["loss"], abs=1e-5
    )
