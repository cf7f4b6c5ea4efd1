"""TransformerLens 3's weight processing on our model (`inducthead.model.weight_processing`).

Every model is random with every parameter perturbed (`conftest.perturbed`: norm weights, biases,
b_rel), so a transform that dropped a term would show. Functions are compared through log-probs
on random tokens; float64 to 1e-9 catches any mistake in the algebra, float32 shows what users
see (measured: at most 6e-6 on normed models, 1.5e-6 of the largest logit on models without a
norm, whose logits reach ~80).
"""

from __future__ import annotations

import copy
import itertools
import warnings

import pytest
import torch
from conftest import perturbed, tiny_config
from transformer_lens.weight_processing import ProcessWeights

import inducthead as ih
from inducthead.model.components import Norm
from inducthead.model.weight_processing import folded_config

NORMS = [None, "LN", "LNPre", "RMS", "RMSPre"]
POSITIONS = ["standard", "shortformer", "rotary", "relative", "alibi", "none"]
MATRIX = list(itertools.product(NORMS, POSITIONS, [True, False], [True, False]))
MATRIX_IDS = [
    f"{n}-{p}-{'attn' if a else 'mlp'}-{'bias' if b else 'nobias'}" for n, p, a, b in MATRIX
]


def make(dtype=torch.float64, seed=1, **overrides) -> ih.HookedTransformer:
    return perturbed(ih.HookedTransformer(tiny_config(**overrides)), seed=seed).to(dtype)


def tokens(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 23, (n, 24), generator=torch.Generator().manual_seed(seed))


def log_probs(model, toks) -> torch.Tensor:
    return model(toks).log_softmax(-1)


def can_fold(cfg) -> bool:
    """fold_ln refuses shortformer models with norm weights (positions join after ln1)."""
    return not (
        cfg.positional_embedding_type == "shortformer" and cfg.normalization_type in ("LN", "RMS")
    )


def process(model, **flags) -> ih.HookedTransformer:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fold_ln on models without norm weights warns (tested)
        return model.process_weights_(fold_ln=can_fold(model.cfg), **flags)


def check_processed(model, kind, use_bias) -> None:
    """The documented end state of `process_weights_()`."""
    cfg, sd = model.cfg, model.state_dict()
    folded = can_fold(cfg) and kind in ("LN", "RMS")
    assert cfg.normalization_type == ({"LN": "LNPre", "RMS": "RMSPre"}[kind] if folded else kind)
    if cfg.normalization_type in ("LNPre", "RMSPre"):
        assert not any(".ln" in k or k.startswith("ln_final") for k in sd)
        norms = [model.ln_final] + [
            m for b in model.blocks for m in (b.ln1, getattr(b, "ln2", b.ln1))
        ]
        assert all(isinstance(n, Norm) and not list(n.parameters()) for n in norms)
    assert cfg.use_bias == (use_bias or (folded and kind == "LN"))  # the folded LN bias's home
    zero = torch.zeros((), dtype=torch.float64)
    torch.testing.assert_close(
        sd["unembed.W_U"].mean(-1), zero.expand(cfg.d_model), atol=1e-12, rtol=0
    )
    for l in range(cfg.n_layers):
        if f"blocks.{l}.attn.b_V" in sd:
            assert not sd[f"blocks.{l}.attn.b_V"].any()
    if kind in ("LN", "LNPre"):
        writers = ["embed.W_E", "blocks.0.attn.W_O", "blocks.1.attn.b_O"]
        writers += [] if cfg.attn_only else ["blocks.0.mlp.W_out", "blocks.1.mlp.b_out"]
        writers += ["pos_embed.W_pos"] if cfg.positional_embedding_type == "standard" else []
        for key in writers:
            if key in sd:
                assert sd[key].mean(-1).abs().max() < 1e-12, key


@pytest.mark.parametrize("norm,pos,attn_only,use_bias", MATRIX, ids=MATRIX_IDS)
def test_process_weights_preserves_log_probs(norm, pos, attn_only, use_bias, one_cpu_thread):
    """Every norm x positions x attn-only/MLP x bias combination, float64: processing, then
    refactoring (except rotary), leave the log-probs unchanged."""
    model = make(
        normalization_type=norm,
        positional_embedding_type=pos,
        attn_only=attn_only,
        use_bias=use_bias,
    )
    toks = tokens()
    before = log_probs(model, toks)
    shortformer_pos = model.W_pos.clone()
    process(model)
    torch.testing.assert_close(log_probs(model, toks), before, atol=1e-9, rtol=0)
    check_processed(model, norm, use_bias)
    if pos == "shortformer":  # added after ln1, never to the residual stream: not centred
        assert torch.equal(model.W_pos, shortformer_pos)
    if pos != "rotary":
        model.load_state_dict(model.refactor_factored_attn_matrices(model.state_dict()))
        torch.testing.assert_close(log_probs(model, toks), before, atol=1e-9, rtol=0)


@pytest.mark.parametrize("norm,pos,attn_only,use_bias", MATRIX, ids=MATRIX_IDS)
def test_process_weights_float32(norm, pos, attn_only, use_bias, one_cpu_thread):
    """The same in float32: to 1e-5, or 3e-6 of the largest logit for models without a norm
    (their logits reach ~80; float32 rounding is relative)."""
    model = make(
        torch.float32,
        normalization_type=norm,
        positional_embedding_type=pos,
        attn_only=attn_only,
        use_bias=use_bias,
    )
    toks = tokens()
    logits = model(toks)
    process(model, refactor_factored_attn_matrices=pos != "rotary")
    atol = 1e-5 if norm else 3e-6 * logits.abs().max().item()
    torch.testing.assert_close(log_probs(model, toks), logits.log_softmax(-1), atol=atol, rtol=0)


EXTRAS = [
    dict(use_attn_result=True),
    dict(use_split_qkv_input=True),
    dict(d_vocab_out=17),
    dict(n_heads=2, d_head=40),  # d_head > d_model: refactor pads its SVD
]


@pytest.mark.parametrize("extra", EXTRAS, ids=lambda e: next(iter(e)))
@pytest.mark.parametrize("norm", ["LN", "RMS"])
@pytest.mark.parametrize("pos", ["standard", "relative"])
def test_process_weights_extras(extra, norm, pos, one_cpu_thread):
    model = make(normalization_type=norm, positional_embedding_type=pos, **extra)
    toks = tokens()
    before = log_probs(model, toks)
    model.process_weights_(refactor_factored_attn_matrices=True)
    torch.testing.assert_close(log_probs(model, toks), before, atol=1e-9, rtol=0)
    check_processed(model, norm, True)
    _, cache = model.run_with_cache(toks)  # the rebuilt norms' hooks are named and run
    assert cache["blocks.1.ln1.hook_normalized"].shape[-1] == model.cfg.d_model


@pytest.mark.parametrize("norm,pos", [("LN", "standard"), ("RMS", "rotary"), ("LN", "alibi")])
def test_fold_ln_alone_changes_only_the_norm_outputs(norm, pos, one_cpu_thread):
    """Folding is exact activation by activation: `ln*.hook_normalized` is x / scale before and
    after (TL 3's semantics); only what a folded norm hands on unhooked changes, i.e. the
    unembedding's input `unembed.hook_in`; logits stay."""
    model = make(normalization_type=norm, positional_embedding_type=pos, use_split_qkv_input=True)
    toks = tokens()
    logits_before, before = model.run_with_cache(toks)
    model.process_weights_(
        center_writing_weights=False, center_unembed=False, fold_value_biases=False
    )
    logits, after = model.run_with_cache(toks)
    assert set(after.keys()) == set(before.keys())
    changed = {k for k in before if not torch.allclose(after[k], before[k], atol=1e-10, rtol=0)}
    assert changed == {"unembed.hook_in"}
    torch.testing.assert_close(logits, logits_before, atol=1e-10, rtol=0)
    scale = before["ln_final.hook_scale"]
    resid = before["blocks.1.hook_resid_post"]
    centred = resid - resid.mean(-1, keepdim=True) if norm == "LN" else resid
    torch.testing.assert_close(after["ln_final.hook_normalized"], centred / scale)


def test_process_weights_hooks_upstream_and_inside_unchanged(one_cpu_thread):
    """With every default transform: queries, keys, patterns, MLP activations and norm scales are
    what they were; the residual stream is centred; logits move by a constant per position."""
    model = make(normalization_type="LN")
    toks = tokens()
    logits_before, before = model.run_with_cache(toks)
    model.process_weights_()
    logits, after = model.run_with_cache(toks)
    for key in before:
        if key.endswith(
            (
                "hook_q",
                "hook_k",
                "hook_attn_scores",
                "hook_pattern",
                "hook_scale",
                "hook_pre",
                "hook_post",
            )
        ):
            torch.testing.assert_close(after[key], before[key], atol=1e-10, rtol=0, msg=key)
    resid = before["blocks.1.hook_resid_mid"]
    torch.testing.assert_close(
        after["blocks.1.hook_resid_mid"], resid - resid.mean(-1, keepdim=True)
    )
    shift = logits - logits_before
    assert shift.std(-1).max() < 1e-10 and shift.abs().max() > 1e-3  # a real, constant shift
    assert not torch.allclose(after["blocks.0.attn.hook_z"], before["blocks.0.attn.hook_z"])  # b_V


@pytest.mark.parametrize("norm", ["LN", "RMS", "LNPre", None])
def test_state_dict_methods_load_and_preserve(norm):
    """Each state-dict method: returns a dict `load_state_dict` takes for the processed config,
    leaves its input alone, and the loaded model computes the same log-probs."""
    model = make(normalization_type=norm, use_bias=False)
    toks = tokens()
    before = log_probs(model, toks)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    steps = [model.center_unembed, model.fold_value_biases, model.refactor_factored_attn_matrices]
    if norm in ("LN", "LNPre"):
        steps.append(model.center_writing_weights)
    cfg = model.cfg
    if norm is not None:
        center = norm in ("LN", "LNPre")
        steps.insert(0, lambda sd: model.fold_layer_norm(sd, center_weights=center))
        cfg = folded_config(model.cfg)
    for step in steps:
        sd = model.state_dict()
        out = step(sd)
        assert all(torch.equal(sd[k], original[k]) for k in original)  # input untouched
        target = ih.HookedTransformer(cfg if step is steps[0] else model.cfg, init=False).double()
        target.load_state_dict(out)  # strict
        torch.testing.assert_close(log_probs(target, toks), before, atol=1e-9, rtol=0)


def test_known_answers():
    """The transforms' defining equations, on one model's state dict."""
    model = make(normalization_type="LN")
    sd = model.state_dict()
    w, b = sd["blocks.0.ln1.w"], sd["blocks.0.ln1.b"]
    W_Q, b_Q = sd["blocks.0.attn.W_Q"], sd["blocks.0.attn.b_Q"]
    folded = model.fold_layer_norm(sd, center_weights=False)
    torch.testing.assert_close(folded["blocks.0.attn.W_Q"], W_Q * w[:, None])
    torch.testing.assert_close(folded["blocks.0.attn.b_Q"], b_Q + torch.einsum("m,hmd->hd", b, W_Q))
    centred = model.fold_layer_norm(sd)["blocks.0.attn.W_Q"]
    torch.testing.assert_close(
        centred, folded["blocks.0.attn.W_Q"] - folded["blocks.0.attn.W_Q"].mean(1, keepdim=True)
    )
    fv = model.fold_value_biases(sd)
    expected = sd["blocks.1.attn.b_O"] + sum(
        sd["blocks.1.attn.b_V"][h] @ sd["blocks.1.attn.W_O"][h] for h in range(4)
    )
    torch.testing.assert_close(fv["blocks.1.attn.b_O"], expected)
    assert not fv["blocks.1.attn.b_V"].any()
    cu = model.center_unembed(sd)
    assert cu["unembed.W_U"].mean(-1).abs().max() < 1e-12 and cu["unembed.b_U"].mean().abs() < 1e-12
    cw = model.center_writing_weights(sd)
    for key in (
        "embed.W_E",
        "pos_embed.W_pos",
        "blocks.0.attn.W_O",
        "blocks.0.attn.b_O",
        "blocks.1.mlp.W_out",
        "blocks.1.mlp.b_out",
    ):
        assert cw[key].mean(-1).abs().max() < 1e-12, key
        torch.testing.assert_close(cw[key], sd[key] - sd[key].mean(-1, keepdim=True))


def test_refactor_keeps_products_and_evens_the_factors():
    model = make(normalization_type="LN")
    sd = model.state_dict()
    out = model.refactor_factored_attn_matrices(sd)

    def qk(d, x):  # [h, d_model + 1, d_head]: the bias as the weight of a constant input
        return torch.cat([d[f"blocks.0.attn.W_{x}"], d[f"blocks.0.attn.b_{x}"][:, None]], 1)

    torch.testing.assert_close(qk(out, "Q") @ qk(out, "K").mT, qk(sd, "Q") @ qk(sd, "K").mT)
    torch.testing.assert_close(qk(out, "Q").norm(dim=1), qk(out, "K").norm(dim=1))  # √S each
    W_V, W_O = out["blocks.0.attn.W_V"], out["blocks.0.attn.W_O"]
    torch.testing.assert_close(W_V @ W_O, sd["blocks.0.attn.W_V"] @ sd["blocks.0.attn.W_O"])
    torch.testing.assert_close(W_O @ W_O.mT, torch.eye(8, dtype=W_O.dtype).expand(4, 8, 8))
    assert not out["blocks.0.attn.b_V"].any()


@pytest.mark.parametrize(
    "norm,pos,attn_only",
    [
        ("LN", "standard", False),
        ("LN", "rotary", True),
        ("RMS", "standard", False),
        ("RMS", "relative", True),
        ("LN", "none", False),
    ],
)
def test_matches_transformer_lens_process_weights(norm, pos, attn_only):
    """TransformerLens 4.3's `ProcessWeights.process_weights` on the same state dict (TL keys,
    our config; TL sets LN -> LNPre before calling it, so do we). TL keeps identity `ln*.w/b`
    where we drop them, and works in float32 (hence 1e-6). Not compared: bias-free models (TL
    leaves ln_final.b unfolded when there is no b_U), shortformer (TL changes the function)."""
    model = make(normalization_type=norm, positional_embedding_type=pos, attn_only=attn_only)
    tl_cfg = copy.deepcopy(model.cfg)
    tl_cfg.normalization_type += "Pre"
    theirs = ProcessWeights.process_weights(
        {k: v.clone() for k, v in model.state_dict().items()}, tl_cfg
    )
    ours = model.process_weights_().state_dict()
    assert set(ours) == {k for k in theirs if ".ln" not in k and not k.startswith("ln_final")}
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key].double(), atol=1e-6, rtol=0, msg=key)


def test_bias_free_layer_norm_gets_biases():
    model = make(normalization_type="LN", use_bias=False)
    toks = tokens()
    before = log_probs(model, toks)
    model.process_weights_()
    assert (
        model.cfg.use_bias
        and model.blocks[0].attn.b_Q is not None
        and model.unembed.b_U is not None
    )
    assert model.blocks[0].mlp.b_in.dtype == torch.float64
    torch.testing.assert_close(log_probs(model, toks), before, atol=1e-9, rtol=0)
    rms = make(normalization_type="RMS", use_bias=False).process_weights_()
    assert not rms.cfg.use_bias and rms.blocks[0].attn.b_Q is None  # RMS folding adds no bias


def test_refusals_leave_the_model_unchanged():
    model = make(normalization_type="LN", positional_embedding_type="shortformer")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="shortformer"):
        model.process_weights_()
    assert model.cfg.normalization_type == "LN"
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="fold_biases=False"):
        model.fold_layer_norm(state, fold_biases=False)
    rms = make(normalization_type="RMS")
    with pytest.raises(ValueError, match="center_weights=False"):
        rms.fold_layer_norm(rms.state_dict())  # TL's default center_weights=True
    with pytest.raises(ValueError, match="LayerNorm"):
        rms.center_writing_weights(rms.state_dict())
    with pytest.raises(ValueError, match="no norm"):
        make(normalization_type=None).fold_layer_norm(state)
    with pytest.raises(ValueError, match="rotary"):
        rotary = make(positional_embedding_type="rotary")
        rotary.refactor_factored_attn_matrices(rotary.state_dict())
    standard = make(normalization_type="LN")
    with pytest.raises(KeyError, match="folded already"):
        standard.fold_layer_norm({k: v for k, v in standard.state_dict().items() if ".ln" not in k})


def test_no_norm_weights_warns_and_skips_fold_only():
    """As TL: fold_ln on a model without norm weights warns and skips; the rest still runs, so a
    second process_weights_ is harmless."""
    model = make(normalization_type=None)
    toks = tokens()
    before = log_probs(model, toks)
    with pytest.warns(UserWarning, match="no norm weights to fold"):
        model.process_weights_()
    assert model.W_U.mean(-1).abs().max() < 1e-12
    again = make(normalization_type="LN").process_weights_()
    state = {k: v.clone() for k, v in again.state_dict().items()}
    with pytest.warns(UserWarning, match="'LNPre'"):
        again.process_weights_()
    assert all(torch.allclose(v, state[k], atol=1e-12) for k, v in again.state_dict().items())
    torch.testing.assert_close(log_probs(model, toks), before, atol=1e-9, rtol=0)


def test_half_precision_is_processed_in_float32_and_stays_half():
    model = make(torch.bfloat16, normalization_type="LN").process_weights_()
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_processed_model_saves_and_loads(tmp_path):
    """The processed config (LNPre, biases materialised) is a checkpoint's config like any other."""
    from inducthead.runs.checkpoint import write_checkpoint

    model = make(torch.float32, normalization_type="LN", use_bias=False).process_weights_()
    path = write_checkpoint(tmp_path / "processed.safetensors", model)
    loaded = ih.load(path)
    assert loaded.cfg.normalization_type == "LNPre" and loaded.cfg.use_bias
    toks = tokens()
    torch.testing.assert_close(loaded(toks), model(toks), atol=0, rtol=0)


@pytest.mark.parametrize("norm", ["LN", "RMS", None])
def test_grouped_query_attention(norm, one_cpu_thread):
    """GQA's shared key/value heads are `_W_K`, `_b_K`, `_W_V`, `_b_V`: ln1 folds into them and
    `_b_V` (each query head's, repeated as in the forward pass) into b_O; refactoring, which
    needs a W_K per head, is refused."""
    model = make(normalization_type=norm, n_key_value_heads=2)
    toks = tokens()
    before = log_probs(model, toks)
    process(model)
    torch.testing.assert_close(log_probs(model, toks), before, atol=1e-9, rtol=0)
    assert not model.blocks[0].attn._b_V.any()
    with pytest.raises(ValueError, match="grouped-query"):
        model.refactor_factored_attn_matrices(model.state_dict())
