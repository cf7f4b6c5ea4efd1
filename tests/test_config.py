import json

import pytest

import inducthead as ih
from inducthead.model import HookedTransformerConfig


def test_defaults_follow_transformerlens():
    cfg = HookedTransformerConfig(n_layers=2, d_model=64, n_ctx=32, d_head=16, d_vocab=10)
    assert cfg.n_heads == 4
    assert cfg.d_mlp == 256 and cfg.act_fn == "gelu"
    assert cfg.attn_scale == 4.0
    assert cfg.initializer_range == pytest.approx(0.8 / 8)
    assert cfg.d_vocab_out == 10
    assert cfg.normalization_type == "LN"


def test_round_trip_through_json():
    cfg = HookedTransformerConfig(
        n_layers=3,
        d_model=48,
        n_ctx=40,
        d_head=12,
        d_vocab=7,
        attn_only=True,
        positional_embedding_type="relative",
        relative_window=5,
        bos_token_id=6,
        use_bias=False,
    )
    again = HookedTransformerConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert HookedTransformerConfig.from_json(cfg.to_json()) == cfg
    assert again.hash() == cfg.hash()
    assert cfg.replace(n_layers=4).hash() != cfg.hash()


def test_transformerlens3_dict_loads():
    tl3 = dict(
        n_layers=1,
        d_model=16,
        n_ctx=8,
        d_head=4,
        d_vocab=5,
        act_fn="relu",
        device="cpu",
        tokenizer_name=None,
        original_architecture="GPT2LMHeadModel",
        default_prepend_bos=True,
        n_params=1234,
    )
    cfg = HookedTransformerConfig.from_dict(tl3)
    assert cfg.act_fn == "relu" and cfg.n_heads == 4


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(positional_embedding_type="sinusoidal"), "positional_embedding_type"),
        (dict(normalization_type="layernorm"), "normalization_type"),
        (dict(attn_only=True, d_mlp=64), "d_mlp"),
        (dict(attn_only=True, act_fn="relu"), "act_fn"),
        (dict(act_fn="tanh"), "act_fn"),
        (dict(d_model=-4), "d_model"),
        (dict(n_layers=0), "n_layers"),
        (dict(d_vocab=0), "d_vocab"),
        (dict(bos_token_id=10), "bos_token_id"),
        (dict(rotary_dim=4), "rotary_dim"),
        (dict(positional_embedding_type="rotary", rotary_dim=3), "rotary_dim"),
        (dict(relative_window=3), "relative_window"),
        (dict(eps=0.0), "eps"),
        (dict(seed=1.5), "seed"),
        (dict(use_bias="yes"), "use_bias"),
        (dict(d_head=5), "n_heads"),
    ],
)
def test_invalid_configs_name_the_field(kwargs, field):
    base = dict(n_layers=2, d_model=32, n_ctx=16, d_head=8, d_vocab=10)
    base.update(kwargs)
    with pytest.raises(ValueError, match=field):
        HookedTransformerConfig(**base)


def test_unknown_keys_are_refused_by_name():
    with pytest.raises(ValueError, match="n_layer"):
        HookedTransformerConfig.from_dict(dict(n_layer=2, d_model=8, n_ctx=8, d_head=4, d_vocab=3))


def test_replace_rederives_dependent_defaults():
    cfg = HookedTransformerConfig(n_layers=1, d_model=32, n_ctx=8, d_head=8, d_vocab=5)
    wider = cfg.replace(d_model=64)
    assert wider.n_heads == 8 and wider.d_mlp == 256
    assert cfg.replace(attn_only=True).d_mlp is None
    assert cfg.replace(d_model=64, n_heads=2).n_heads == 2


def test_presets():
    names = ih.configs.list()
    for name in [
        "demo",
        "olsson-attn-only-1l",
        "olsson-attn-only-2l",
        "olsson-attn-only-3l",
        "olsson-attn-only-2l-small",
    ]:
        assert name in names
    big = ih.configs.get("olsson-attn-only-2l").model
    assert (big.d_model, big.n_heads, big.d_head) == (768, 12, 64)
    assert big.positional_embedding_type == "shortformer" and big.normalization_type is None
    assert big.attn_only
    with pytest.raises(ValueError, match="available: .*demo"):
        ih.configs.get("olsen")
    preset = ih.configs.get("demo").with_seed(3)
    assert preset.model.seed == 3 and preset.train.seed == 3
    assert "demo" in repr(preset)


def test_replace_keeps_the_values_that_were_given():
    demo = ih.presets.get("demo").model
    wider = demo.replace(d_model=128)
    assert wider.n_heads == 2 and wider.d_head == 32  # given in the preset: kept
    assert wider.initializer_range == pytest.approx(0.8 / 128**0.5)  # never given: re-derived
    rel = HookedTransformerConfig(
        n_layers=1,
        d_model=32,
        n_ctx=64,
        d_head=8,
        d_vocab=5,
        positional_embedding_type="relative",
        relative_window=8,
        initializer_range=0.05,
    )
    longer = rel.replace(n_ctx=256)
    assert longer.relative_window == 8 and longer.initializer_range == 0.05
    # a value given to replace counts as given from then on
    assert rel.replace(n_heads=2).replace(d_model=64).n_heads == 2
    assert (
        HookedTransformerConfig(
            n_layers=1,
            d_model=32,
            n_ctx=64,
            d_head=8,
            d_vocab=5,
            positional_embedding_type="relative",
        )
        .replace(n_ctx=256)
        .relative_window
        == 256
    )


def test_tl3_settings_that_change_the_function_are_refused_by_name():
    base = dict(n_layers=1, d_model=8, n_ctx=8, d_head=4, d_vocab=5)
    defaults = {
        "attention_dir": "causal",
        "parallel_attn_mlp": False,
        "scale_attn_by_inverse_layer_idx": False,
        "attn_scores_soft_cap": -1.0,
        "output_logits_soft_cap": -1.0,
        "NTK_by_parts_factor": 8.0,  # a parameter of NTK-by-parts RoPE, which is off
    }
    assert HookedTransformerConfig.from_dict({**base, **defaults}).n_heads == 2
    for key, value in [
        ("parallel_attn_mlp", True),
        ("scale_attn_by_inverse_layer_idx", True),
        ("attn_scores_soft_cap", 50.0),
        ("output_logits_soft_cap", 30.0),
        ("gated_mlp", True),
        ("use_local_attn", True),
    ]:
        with pytest.raises(ValueError, match=f"{key}={value!r}.*does not implement"):
            HookedTransformerConfig.from_dict({**base, key: value})


def test_tl3_values_that_cannot_change_the_function_load_and_those_that_do_are_named():
    """Found by tests/test_tl3_differential.py against TL 3.9's own cfg.to_dict()."""
    base = dict(n_layers=1, d_model=8, n_ctx=8, d_head=4, d_vocab=5)
    rotary = dict(base, positional_embedding_type="rotary", rotary_base=5000.0)  # from HF: float
    assert HookedTransformerConfig.from_dict(rotary).rotary_base == 5000.0
    with pytest.raises(ValueError, match="rotary_base"):
        HookedTransformerConfig.from_dict({**rotary, "rotary_base": -1.0})
    # TL 3.9 builds post-norm blocks and QK norms for these architectures
    with pytest.raises(ValueError, match="original_architecture='Olmo2ForCausalLM'"):
        HookedTransformerConfig.from_dict({**base, "original_architecture": "Olmo2ForCausalLM"})
    assert HookedTransformerConfig.from_dict({**base, "original_architecture": "GPT2LMHeadModel"})
    # read by TL 3 only with local attention (off), or only by its encoder-decoder models
    inert = dict(window_size=8, attn_types=["global"], rotary_base_local=1e6,
                 decoder_start_token_id=0, relative_attention_num_buckets=32)  # fmt: skip
    assert HookedTransformerConfig.from_dict({**base, **inert}).n_heads == 2
    with pytest.raises(ValueError, match="use_local_attn=True.*window_size=8"):
        HookedTransformerConfig.from_dict({**base, **inert, "use_local_attn": True})
