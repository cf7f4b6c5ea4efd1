import math

import pytest
import torch
import torch.nn.functional as F
from conftest import perturbed, tiny_config

import inducthead as ih

POSITIONS = ["standard", "shortformer", "rotary", "relative", "alibi", "none"]
NORMS = [None, "LN", "LNPre", "RMS", "RMSPre"]


def tokens_for(cfg, batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(cfg.d_vocab, (batch, cfg.n_ctx), generator=g)


@pytest.mark.parametrize("pos", POSITIONS)
@pytest.mark.parametrize("norm", NORMS)
def test_sdpa_fast_path_equals_explicit_softmax(pos, norm):
    cfg = tiny_config(
        positional_embedding_type=pos,
        normalization_type=norm,
        relative_window=7 if pos == "relative" else None,
    )
    model = perturbed(ih.HookedTransformer(cfg))
    toks = tokens_for(cfg)
    with model.fast_attention():
        fast = model(toks)  # no pattern hook: scaled_dot_product_attention
        slow, cache = model.run_with_cache(toks)  # pattern cached: explicit softmax path
    assert "blocks.1.attn.hook_pattern" in cache
    torch.testing.assert_close(fast, slow, atol=1e-4, rtol=1e-4)  # float32 kernels differ
    model.double()  # in float64 the two paths agree to rounding: they compute the same function
    with model.fast_attention():
        fast64 = model(toks)
        slow64, _ = model.run_with_cache(toks)
    torch.testing.assert_close(fast64, slow64, atol=1e-10, rtol=1e-10)


def test_fast_path_is_taken_only_without_pattern_hooks(monkeypatch):
    model = ih.HookedTransformer(tiny_config())
    calls = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(
        F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    toks = tokens_for(model.cfg)
    with model.fast_attention():
        model(toks)
        assert len(calls) == 2
        model.run_with_cache(toks, names_filter="blocks.0.attn.hook_pattern")
        assert len(calls) == 3  # layer 0 explicit, layer 1 still fast
    model(toks)  # outside fast_attention: never
    assert len(calls) == 3


@pytest.mark.parametrize("pos", POSITIONS)
def test_the_output_does_not_depend_on_the_hooks_attached(pos):
    """What TL users compare all the time: a forward with and without hooks, in either mode."""
    cfg = tiny_config(
        positional_embedding_type=pos, relative_window=7 if pos == "relative" else None
    )
    model = perturbed(ih.HookedTransformer(cfg))
    toks = tokens_for(cfg)
    for mode in (model.train, model.eval):
        mode()
        plain = model(toks)
        cached, cache = model.run_with_cache(toks)
        assert torch.equal(plain, cached) and "blocks.0.attn.hook_pattern" in cache
        hooked = model.run_with_hooks(
            toks, fwd_hooks=[("blocks.1.attn.hook_pattern", lambda x, hook: x)]
        )
        assert torch.equal(plain, hooked)


def test_shortformer_keeps_positions_out_of_the_residual_stream():
    cfg = tiny_config(
        positional_embedding_type="shortformer", attn_only=True, normalization_type=None
    )
    model = perturbed(ih.HookedTransformer(cfg))
    toks = tokens_for(cfg)
    _, cache = model.run_with_cache(toks)
    torch.testing.assert_close(cache["blocks.0.hook_resid_pre"], model.W_E[toks], atol=0, rtol=0)
    # ...while positions still shape attention: changing W_pos changes the patterns,
    pattern = cache["blocks.0.attn.hook_pattern"]
    with torch.no_grad():
        model.pos_embed.W_pos.mul_(3.0)
    _, cache2 = model.run_with_cache(toks)
    assert (cache2["blocks.0.attn.hook_pattern"] - pattern).abs().max() > 1e-3
    # but never the values: with uniform attention in layer 0 the output has no position term.
    standard = ih.HookedTransformer(cfg.replace(positional_embedding_type="standard"))
    standard.load_state_dict(model.state_dict())
    _, cache3 = standard.run_with_cache(toks)
    torch.testing.assert_close(
        cache3["blocks.0.hook_resid_pre"], model.W_E[toks] + model.W_pos[None]
    )


def _content_free(cfg):
    """A model whose queries are zero, so attention scores are the positional bias alone."""
    model = perturbed(ih.HookedTransformer(cfg))
    with torch.no_grad():
        for block in model.blocks:
            block.attn.W_Q.zero_()
            if block.attn.b_Q is not None:
                block.attn.b_Q.zero_()
    return model


def _softmax_rows(bias):
    """Causal softmax of `bias[h, i, j]` computed row by row (reference)."""
    h, n, _ = bias.shape
    out = torch.zeros(h, n, n)
    for head in range(h):
        for i in range(n):
            row = torch.tensor([bias[head, i, j] for j in range(i + 1)])
            weights = torch.exp(row - row[torch.isfinite(row)].max())
            out[head, i, : i + 1] = weights / weights.sum()
    return out


def test_relative_positions_match_direct_formula():
    window = 5
    cfg = tiny_config(positional_embedding_type="relative", relative_window=window)
    model = _content_free(cfg)
    _, cache = model.run_with_cache(tokens_for(cfg, batch=1))
    b_rel = model.blocks[0].attn.b_rel.detach()
    n = cfg.n_ctx
    bias = torch.full((cfg.n_heads, n, n), -math.inf)
    for h in range(cfg.n_heads):
        for i in range(n):
            for j in range(i + 1):
                if i - j < window:
                    bias[h, i, j] = b_rel[h, i - j]
    torch.testing.assert_close(cache["blocks.0.attn.hook_pattern"][0], _softmax_rows(bias))
    # keys further back than the window get exactly zero attention
    assert cache["blocks.0.attn.hook_pattern"][0, :, window:, 0].abs().max() == 0


def test_alibi_matches_direct_formula():
    cfg = tiny_config(positional_embedding_type="alibi")
    model = _content_free(cfg)
    _, cache = model.run_with_cache(tokens_for(cfg, batch=1))
    slopes = [2 ** (-8 * (h + 1) / cfg.n_heads) for h in range(cfg.n_heads)]  # Press et al. 2022
    n = cfg.n_ctx
    bias = torch.tensor(
        [[[-slopes[h] * (i - j) for j in range(n)] for i in range(n)] for h in range(cfg.n_heads)]
    )
    torch.testing.assert_close(cache["blocks.0.attn.hook_pattern"][0], _softmax_rows(bias))


@pytest.mark.parametrize("adjacent", [False, True])
def test_rotary_scores_depend_only_on_the_offset(adjacent):
    cfg = tiny_config(
        positional_embedding_type="rotary",
        rotary_adjacent_pairs=adjacent,
        normalization_type=None,
        attn_only=True,
    )
    model = perturbed(ih.HookedTransformer(cfg))
    toks = torch.full((1, cfg.n_ctx), 3)  # same token everywhere: only positions differ
    _, cache = model.run_with_cache(toks)
    scores = cache["blocks.0.attn.hook_attn_scores"][0]
    n = cfg.n_ctx
    for offset in range(4):
        diag = torch.stack([scores[:, i, i - offset] for i in range(offset, n)], -1)
        torch.testing.assert_close(diag, diag[:, :1].expand_as(diag), atol=1e-4, rtol=1e-4)
    assert scores[:, 5, 5].sub(scores[:, 5, 4]).abs().max() > 1e-4  # positions matter


def test_loss_is_next_token_cross_entropy():
    cfg = tiny_config()
    model = perturbed(ih.HookedTransformer(cfg))
    toks = tokens_for(cfg)
    logits, loss = model(toks, return_type="both")
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, cfg.d_vocab), toks[:, 1:].reshape(-1))
    torch.testing.assert_close(loss, expected)
    assert model(toks, return_type="loss", loss_per_token=True).shape == (3, cfg.n_ctx - 1)
    assert model(toks, return_type=None) is None


def test_weight_views_have_transformerlens_shapes_and_names():
    cfg = tiny_config(attn_only=False, d_mlp=40)
    model = ih.HookedTransformer(cfg)
    L, H, M, D = cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_head
    assert model.W_Q.shape == (L, H, M, D) and model.W_O.shape == (L, H, D, M)
    assert model.b_Q.shape == (L, H, D) and model.b_O.shape == (L, M)
    assert model.W_E.shape == (cfg.d_vocab, M) and model.W_U.shape == (M, cfg.d_vocab)
    assert model.W_in.shape == (L, M, 40) and model.W_out.shape == (L, 40, M)
    assert model.W_Q[1, 2].data_ptr() == model.blocks[1].attn.W_Q[2].data_ptr() or torch.equal(
        model.W_Q[1, 2], model.blocks[1].attn.W_Q[2]
    )
    torch.testing.assert_close(model.OV.AB, model.W_V @ model.W_O)
    torch.testing.assert_close(model.QK.AB, model.W_Q @ model.W_K.transpose(-1, -2))
    keys = set(model.state_dict())
    assert {
        "embed.W_E",
        "pos_embed.W_pos",
        "blocks.0.attn.W_Q",
        "blocks.0.attn.b_O",
        "blocks.0.ln1.w",
        "blocks.0.mlp.W_in",
        "unembed.W_U",
        "unembed.b_U",
    } <= keys
    assert model.all_head_labels()[:2] == ["L0H0", "L0H1"]


def test_bias_free_models_report_zero_biases():
    model = ih.HookedTransformer(tiny_config(use_bias=False))
    assert not any(n.endswith(("b_Q", "b_O", "b_U")) for n, _ in model.named_parameters())
    assert model.b_Q.abs().sum() == 0 and model.b_U.shape == (model.cfg.d_vocab,)


def test_result_and_split_qkv_hooks_compute_the_same_function():
    cfg = tiny_config()
    base = perturbed(ih.HookedTransformer(cfg))
    toks = tokens_for(cfg)
    for flag in ("use_attn_result", "use_split_qkv_input"):
        other = ih.HookedTransformer(cfg.replace(**{flag: True}))
        other.load_state_dict(base.state_dict())
        logits, cache = other.run_with_cache(toks)
        torch.testing.assert_close(logits, base(toks), atol=1e-5, rtol=1e-5)
    model = ih.HookedTransformer(cfg.replace(use_attn_result=True))
    model.load_state_dict(base.state_dict())
    _, cache = model.run_with_cache(toks)
    per_head = cache["blocks.0.attn.hook_result"]
    assert per_head.shape == (3, cfg.n_ctx, cfg.n_heads, cfg.d_model)
    torch.testing.assert_close(per_head.sum(2) + model.b_O[0], cache["blocks.0.hook_attn_out"])


def test_seeded_init_is_deterministic_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = ih.HookedTransformer(tiny_config(seed=5))
    after = torch.rand(1)
    assert torch.equal(before, after)
    b = ih.HookedTransformer(tiny_config(seed=5))
    c = ih.HookedTransformer(tiny_config(seed=6))
    assert torch.equal(a.W_Q, b.W_Q) and not torch.equal(a.W_Q, c.W_Q)


def test_embedding_init_std():
    model = ih.HookedTransformer(tiny_config(embed_init_std=1.0, d_vocab=2000, seed=0))
    assert 0.95 < model.W_E.std().item() < 1.05
    assert model.W_Q.std().item() < 0.3


def test_stop_at_layer_returns_the_residual_stream():
    model = ih.HookedTransformer(tiny_config())
    toks = tokens_for(model.cfg)
    _, cache = model.run_with_cache(toks)
    torch.testing.assert_close(model(toks, stop_at_layer=1), cache["blocks.1.hook_resid_pre"])


@pytest.mark.parametrize(
    "tokens, error, match",
    [
        (torch.zeros(2, 5), TypeError, "integer"),
        ([[1, 2]], TypeError, "torch.Tensor"),
        (torch.zeros(2, 0, dtype=torch.long), ValueError, "empty"),
        (torch.zeros(0, 4, dtype=torch.long), ValueError, "empty"),
        (torch.zeros(2, 25, dtype=torch.long), ValueError, "n_ctx=24"),
        (torch.full((2, 4), 23), ValueError, "max 23"),
        (torch.full((2, 4), -1), ValueError, "min -1"),
        (torch.zeros(2, 2, 2, dtype=torch.long), ValueError, r"\[batch, pos\]"),
    ],
)
def test_bad_tokens_give_clear_errors(tokens, error, match):
    model = ih.HookedTransformer(tiny_config())
    with pytest.raises(error, match=match):
        model(tokens)


def test_one_dimensional_tokens_get_a_batch_dimension():
    model = ih.HookedTransformer(tiny_config())
    assert model(torch.arange(5)).shape == (1, 5, model.cfg.d_vocab)


def test_preset_names_build_models():
    model = ih.HookedTransformer("demo")
    assert model.cfg.model_name == "demo" and "demo" in repr(model)
    with pytest.raises(ValueError, match="unknown preset"):
        ih.HookedTransformer("nope")


def test_models_own_their_config():
    preset = ih.presets.get("demo")
    a, b = ih.HookedTransformer(preset), ih.HookedTransformer(preset)
    a.to("meta")
    assert a.cfg.device == "meta" and b.cfg.device == "cpu"
    assert preset.model.device is None and a.cfg is not b.cfg is not preset.model
    assert a.cfg == b.cfg == preset.model  # same architecture
