"""TransformerLens 3's HookedTransformer API on our model: the cache object, hook semantics and
hook points, forward arguments, grouped-query and bidirectional attention. Compared with TL 4's
TransformerBridge (same weights) where it computes the same thing."""

import pytest
import torch
from conftest import perturbed, tiny_config
from transformer_lens import ActivationCache

import inducthead as ih
from inducthead.model.hooked import HookNameError


def _tokens(cfg, batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(cfg.d_vocab, (batch, cfg.n_ctx), generator=g)


@pytest.fixture(scope="module")
def pair():
    """Our model with LN and MLPs, and the same weights in a TransformerBridge."""
    model = perturbed(ih.HookedTransformer(tiny_config(normalization_type="LN"))).eval()
    return model, ih.to_bridge(model).eval()


def test_run_with_cache_returns_transformerlens_activation_cache(pair):
    model, bridge = pair
    toks = _tokens(model.cfg)
    _, cache = model.run_with_cache(toks)
    _, theirs = bridge.run_with_cache(toks)
    assert isinstance(cache, ActivationCache)
    assert torch.equal(cache["pattern", 0], cache["blocks.0.attn.hook_pattern"])
    assert torch.equal(cache["embed"], cache["hook_embed"])
    for method, kwargs in [
        ("accumulated_resid", {}),
        ("accumulated_resid", {"layer": 1, "apply_ln": True}),
        ("decompose_resid", {}),
        ("stack_head_results", {"layer": -1}),
        ("get_full_resid_decomposition", {"expand_neurons": False}),
    ]:
        ours, labels = getattr(cache, method)(**kwargs, return_labels=True)
        ref, ref_labels = getattr(theirs, method)(**kwargs, return_labels=True)
        assert labels == ref_labels, method
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4, msg=method)
    stack = cache.decompose_resid()
    torch.testing.assert_close(
        cache.apply_ln_to_stack(stack, layer=-1), theirs.apply_ln_to_stack(stack, layer=-1),
        atol=1e-4, rtol=1e-4,
    )  # fmt: skip
    directions = model.tokens_to_residual_directions(toks)
    assert directions.shape == (*toks.shape, 32)
    attrs = cache.logit_attrs(stack, tokens=toks)
    ref_attrs = theirs.logit_attrs(stack, tokens=toks)
    assert attrs.shape == ref_attrs.shape == (stack.shape[0], *toks.shape)
    torch.testing.assert_close(attrs, ref_attrs, atol=1e-4, rtol=1e-4)
    _, one = model.run_with_cache(toks[:1])
    assert one.remove_batch_dim()["pattern", 0].shape == (4, 24, 24)
    _, plain = model.run_with_cache(toks, return_cache_object=False)
    assert type(plain) is dict and torch.equal(plain["hook_embed"], cache["hook_embed"])


def test_hook_normalized_is_before_the_norm_weights_as_in_transformerlens(pair):
    model, bridge = pair
    toks = _tokens(model.cfg)
    _, ours = model.run_with_cache(toks)
    _, theirs = bridge.run_with_cache(toks)
    for name in ("blocks.0.ln1.hook_normalized", "ln_final.hook_normalized"):
        torch.testing.assert_close(ours[name], theirs[name], atol=1e-5, rtol=1e-5)
    x = ours["blocks.1.hook_resid_pre"]
    centred = x - x.mean(-1, keepdim=True)
    expected = centred / ours["blocks.1.ln1.hook_scale"]
    torch.testing.assert_close(ours["blocks.1.ln1.hook_normalized"], expected)


def test_optional_hook_points_fire_when_switched_on():
    model = perturbed(ih.HookedTransformer(tiny_config()))
    toks = _tokens(model.cfg)
    logits, cache = model.run_with_cache(toks)
    assert torch.equal(cache["unembed.hook_out"], logits)
    torch.testing.assert_close(cache["unembed.hook_in"] @ model.W_U + model.b_U, logits)
    off = {"hook_tokens", "blocks.0.hook_attn_in", "blocks.0.hook_q_input", "blocks.0.hook_mlp_in"}
    assert not off & set(cache) and "blocks.0.attn.hook_result" not in cache
    model.cfg.use_hook_tokens = True
    model.set_use_attn_in(True)
    model.set_use_hook_mlp_in(True)
    model.set_use_attn_result(True)
    switched, cache = model.run_with_cache(toks)
    assert off - {"blocks.0.hook_q_input"} <= set(cache) and "blocks.1.attn.hook_result" in cache
    assert torch.equal(cache["hook_tokens"], toks)
    assert cache["blocks.0.hook_attn_in"].shape == (3, 24, 4, 32)
    torch.testing.assert_close(switched, logits, atol=1e-5, rtol=1e-5)  # same function
    model.set_use_split_qkv_input(True)
    split, cache = model.run_with_cache(toks)
    assert cache["blocks.1.hook_k_input"].shape == (3, 24, 4, 32)
    torch.testing.assert_close(split, logits, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="attention-only"):
        ih.HookedTransformer(tiny_config(attn_only=True)).set_use_hook_mlp_in(True)


def test_unknown_hook_names_say_what_the_model_has():
    model = ih.HookedTransformer(tiny_config())
    toks = _tokens(model.cfg)
    for call in (
        lambda: model.add_hook("blocks.0.attn.hook_pattrn", lambda x, hook: x),
        lambda: model.run_with_hooks(toks, fwd_hooks=[("blocks.7.hook_resid_pre", print)]),
    ):
        with pytest.raises(HookNameError, match="no hook point") as caught:
            call()
        assert isinstance(caught.value, KeyError)
    assert "Did you mean blocks.0.attn.hook_pattern" in str(
        pytest.raises(KeyError, model.add_hook, "blocks.0.attn.hook_pattrn", print).value
    )


def test_start_and_stop_at_layer_with_the_residual_stream():
    for pos in ("standard", "shortformer", "rotary"):
        model = perturbed(
            ih.HookedTransformer(tiny_config(n_layers=3, positional_embedding_type=pos))
        )
        toks = _tokens(model.cfg)
        full, loss = model(toks, return_type="both")
        resid = model(toks, stop_at_layer=1)
        _, cache = model.run_with_cache(toks)
        torch.testing.assert_close(resid, cache["blocks.1.hook_resid_pre"])
        shortformer = cache["hook_pos_embed"] if pos == "shortformer" else None
        rest = model(resid, start_at_layer=1, shortformer_pos_embed=shortformer)
        torch.testing.assert_close(rest, full, atol=1e-5, rtol=1e-5)
        rest_loss = model(
            resid, "loss", start_at_layer=1, tokens=toks, shortformer_pos_embed=shortformer
        )
        torch.testing.assert_close(rest_loss, loss)
        middle = model(resid, start_at_layer=1, stop_at_layer=-1, shortformer_pos_embed=shortformer)
        torch.testing.assert_close(middle, cache["blocks.2.hook_resid_pre"])
        assert model(toks, return_type=None) is None
    with pytest.raises(ValueError, match="residual stream"):
        model(toks, start_at_layer=1)
    with pytest.raises(ValueError, match="needs tokens="):
        model(resid, "loss", start_at_layer=1)


@pytest.mark.parametrize("pos", ["standard", "shortformer", "rotary", "alibi", "relative"])
def test_left_padding_with_an_attention_mask_changes_nothing_for_the_real_tokens(pos):
    cfg = tiny_config(
        positional_embedding_type=pos, relative_window=7 if pos == "relative" else None
    )
    model = perturbed(ih.HookedTransformer(cfg)).eval()
    short = _tokens(cfg, batch=1)[:, :15]
    alone, alone_loss = model(short, return_type="both", loss_per_token=True)
    padded = torch.cat([torch.zeros(1, 5, dtype=torch.long), short], 1)
    mask = torch.cat([torch.zeros(1, 5), torch.ones(1, 15)], 1).long()
    logits, loss = model(padded, return_type="both", attention_mask=mask, loss_per_token=True)
    torch.testing.assert_close(logits[:, 5:], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss[:, 5:], alone_loss, atol=1e-5, rtol=1e-5)
    assert torch.all(loss[:, :5] == 0)  # predictions from or of padding do not count
    _, cache = model.run_with_cache(padded, attention_mask=mask)
    assert torch.all(cache["pattern", 0][..., 5:, :5] == 0)  # nothing attends to padding
    assert torch.isfinite(cache["pattern", 0]).all()  # pad queries: zero rows, not NaN
    mean = model(padded, return_type="loss", attention_mask=mask)
    torch.testing.assert_close(mean, model(short, return_type="loss"), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model(padded, attention_mask=mask[:, 1:])


@pytest.mark.parametrize("split", [False, True])
def test_grouped_query_attention_equals_its_expanded_multi_head_twin(split):
    """2 key/value heads serving 4 query heads compute what a 4-head model does whose key and
    value heads come in identical pairs."""
    gqa = perturbed(
        ih.HookedTransformer(tiny_config(n_key_value_heads=2, use_split_qkv_input=split))
    )
    full = ih.HookedTransformer(tiny_config(use_split_qkv_input=split))
    state = {}
    for k, v in gqa.state_dict().items():
        state[k.replace("._", ".")] = v.repeat_interleave(2, dim=0) if "._" in k else v
    full.load_state_dict(state)
    toks = _tokens(gqa.cfg)
    torch.testing.assert_close(gqa(toks), full(toks), atol=1e-5, rtol=1e-5)
    assert gqa.W_K.shape == (2, 4, 32, 8) and torch.equal(gqa.W_K, full.W_K)
    _, cache = gqa.run_with_cache(toks)
    assert cache["blocks.0.attn.hook_k"].shape == (3, 24, 2, 8)  # grouped, as in TL 3
    gqa.set_ungroup_grouped_query_attention(True)
    _, cache = gqa.run_with_cache(toks)
    assert cache["blocks.0.attn.hook_k"].shape == (3, 24, 4, 8)
    with pytest.raises(ValueError, match="must divide n_heads"):
        tiny_config(n_key_value_heads=3)
    with pytest.raises(ValueError, match="grouped-query"):
        gqa.set_use_attn_in(True)


def test_bidirectional_attention_sees_later_tokens():
    model = perturbed(ih.HookedTransformer(tiny_config(attention_dir="bidirectional"))).eval()
    toks = _tokens(model.cfg)
    _, cache = model.run_with_cache(toks)
    pattern = cache["pattern", 0]
    assert (pattern.triu(1) > 0).any() and torch.allclose(pattern.sum(-1), torch.ones(()))
    changed = toks.clone()
    changed[:, -1] = (changed[:, -1] + 1) % model.cfg.d_vocab
    assert not torch.allclose(model(toks)[:, 0], model(changed)[:, 0])  # the future matters
    causal = ih.HookedTransformer(tiny_config())
    causal.load_state_dict(model.state_dict())
    assert torch.allclose(causal(toks)[:, 0], causal(changed)[:, 0])
    with pytest.raises(ValueError, match="attention_dir"):
        tiny_config(attention_dir="sideways")


def test_the_methods_transformerlens_tools_call():
    model = perturbed(ih.HookedTransformer(tiny_config()))
    bias = model.accumulated_bias(2)
    torch.testing.assert_close(bias, model.b_O.sum(0) + model.b_out.sum(0))
    torch.testing.assert_close(
        model.accumulated_bias(1, mlp_input=True), model.b_O.sum(0) + model.b_out[0]
    )
    with pytest.raises(ValueError, match="mlp_input"):
        model.accumulated_bias(2, mlp_input=True)
    assert model.cfg.n_params == 2 * (4 * 32 * 8 * 4 + 2 * 32 * 128)
    assert model.cfg.dtype == torch.float32 and model.double().cfg.dtype == torch.float64
    model.float()
    scores = model.all_composition_scores("K")
    raw = ih.analysis.composition_scores(model, "K", baseline=False)  # equal to TL's (tested)
    torch.testing.assert_close(scores[0, :, 1], raw[0, :, 1], atol=1e-5, rtol=1e-5)
    assert torch.all(scores[1] == 0) and torch.all(scores[:, :, 0] == 0)
    direction = model.tokens_to_residual_directions(5)
    assert torch.equal(direction, model.W_U[:, 5])


def test_hook_shapes_as_transformerlens_3_with_grouped_rotary_keys_and_both_input_switches():
    """Found by tests/test_tl3_differential.py: TL 3 rotates keys before repeating them for the
    query heads, and runs hook_attn_in when use_split_qkv_input is on too."""
    model = ih.HookedTransformer(
        tiny_config(n_key_value_heads=2, positional_embedding_type="rotary")
    )
    _, cache = model.run_with_cache(_tokens(model.cfg))
    assert cache["blocks.0.attn.hook_rot_k"].shape == cache["blocks.0.attn.hook_k"].shape
    assert cache["blocks.0.attn.hook_rot_k"].shape == (3, 24, 2, 8)
    model = ih.HookedTransformer(tiny_config(use_split_qkv_input=True, use_attn_in=True))
    _, cache = model.run_with_cache(_tokens(model.cfg))
    assert cache["blocks.1.hook_attn_in"].shape == cache["blocks.1.hook_q_input"].shape


def test_an_arena_cell_that_builds_a_model_from_a_config_runs_unchanged(tmp_path):
    """ARENA 1.2's induction-head cell (its keywords, smaller sizes): tokenizer_name is loaded as
    TL 3 loads it (here a local directory: no hub), TL 3 keywords the constructor does not need
    are taken, and the cell's next lines (state dict in, to_str_tokens, run_with_cache) work."""
    from inducthead.testing import word_tokenizer

    word_tokenizer(tmp_path / "tok", 40)
    cfg = ih.HookedTransformerConfig(
        d_model=32,
        d_head=8,
        n_heads=4,
        n_layers=2,
        n_ctx=64,
        d_vocab=40,
        attention_dir="causal",
        attn_only=True,  # TL 3 fills in d_mlp = 4 d_model for these: dropped, as from_dict does
        d_mlp=128,
        tokenizer_name=str(tmp_path / "tok"),
        seed=398,
        use_attn_result=True,
        normalization_type=None,
        positional_embedding_type="shortformer",
        device="cpu",
        dtype=torch.float32,
        n_devices=1,
    )
    assert cfg.tokenizer_name == str(tmp_path / "tok") and "tokenizer_name" not in cfg.to_dict()
    model = ih.HookedTransformer(cfg)
    model.load_state_dict(perturbed(ih.HookedTransformer(cfg)).state_dict())
    assert model.tokenizer is not None and model.cfg.device == "cpu"
    text = "w3 w4 w5 w3 w4 w5"
    assert model.to_str_tokens(text) == ["<bos>", *text.split()]
    logits, cache = model.run_with_cache(text, remove_batch_dim=True)
    assert logits.shape == (1, 7, 40) and cache["pattern", 1].shape == (4, 7, 7)


def test_a_config_keyword_that_changes_the_function_is_refused_and_typos_are_type_errors():
    import inspect

    # the constructor that takes TL 3 keywords still shows the fields' signature (Jupyter help)
    assert list(inspect.signature(ih.HookedTransformerConfig).parameters)[:4] == [
        "n_layers",
        "d_model",
        "n_ctx",
        "d_head",
    ]
    with pytest.raises(ValueError, match="parallel_attn_mlp=True"):
        ih.HookedTransformerConfig(
            n_layers=1, d_model=16, n_ctx=8, d_head=8, parallel_attn_mlp=True
        )
    with pytest.raises(TypeError, match="n_layer"):
        ih.HookedTransformerConfig(n_layer=1, d_model=16, n_ctx=8, d_head=8)


def test_a_tokenizer_name_that_cannot_be_loaded_warns_and_leaves_ids_working(tmp_path):
    cfg = ih.HookedTransformerConfig(
        n_layers=1, d_model=16, n_ctx=8, d_head=8, d_vocab=20, tokenizer_name=str(tmp_path / "no")
    )
    with pytest.warns(UserWarning, match="could not load that tokenizer") as caught:
        model = ih.HookedTransformer(cfg)
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    assert model.tokenizer is None and model(torch.tensor([[1, 2, 3]])).shape == (1, 3, 20)


def test_a_model_is_built_on_the_device_and_dtype_its_config_names():
    cfg = ih.HookedTransformerConfig(
        n_layers=1, d_model=16, n_ctx=8, d_head=8, d_vocab=20, device="meta", dtype=torch.float64
    )
    model = ih.HookedTransformer(cfg)
    assert model.embed.W_E.device.type == "meta" and model.embed.W_E.dtype == torch.float64
    assert model.cfg.device == "meta" and model.cfg.dtype == torch.float64
