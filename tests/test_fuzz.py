"""Fuzzing with hypothesis (README "Reliability", guarantee 8).

`valid_configs()` draws every architecture the toolkit supports (1-3 layers, 1-4 heads, d_head
1-32, every positional type and norm, attention-only or with an MLP, with or without biases,
split qkv inputs, per-head results, BOS); `models_and_tokens()` adds a model with non-trivial
weights and a valid input. Valid draws must run and give finite numbers of the right shapes;
invalid configs and inputs must raise ValueError or TypeError naming the field, never a deep
torch error or a silent wrong answer. New analyses (detect, ablation, ...) get their fuzz test
here, drawing from the same strategies.

Set INDUCTHEAD_FUZZ_EXAMPLES (default 30) to fuzz deeper locally.
"""

from __future__ import annotations

import math
import os
import warnings

import pytest
import torch
from conftest import perturbed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import inducthead as ih
from inducthead.model.config import (
    ACT_FNS,
    NORMALIZATION_TYPES,
    POSITIONAL_EMBEDDING_TYPES,
    HookedTransformerConfig,
)
from inducthead.recipe import checkpoint_schedule
from inducthead.tasks import MarkovICL, RepeatedTokens

# INDUCTHEAD_FUZZ_EXAMPLES=500 fuzzes deeper locally; the suite keeps 30 per test (2 CPU cores).
FUZZ = settings(
    max_examples=int(os.environ.get("INDUCTHEAD_FUZZ_EXAMPLES", "30")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # tests/conftest.py


# ---------------------------------------------------------------------------------- strategies
@st.composite
def valid_configs(draw, max_layers: int = 3, max_heads: int = 4, max_d_head: int = 32):
    pos = draw(st.sampled_from(POSITIONAL_EMBEDDING_TYPES))
    d_head = draw(st.integers(2 if pos == "rotary" else 1, max_d_head))
    n_ctx = draw(st.integers(2, 24))
    d_vocab = draw(st.integers(2, 40))
    attn_only = draw(st.booleans())
    kw = dict(
        n_layers=draw(st.integers(1, max_layers)),
        d_model=draw(st.integers(1, 48)),
        n_heads=draw(st.integers(1, max_heads)),
        d_head=d_head,
        d_vocab=d_vocab,
        n_ctx=n_ctx,
        attn_only=attn_only,
        normalization_type=draw(st.sampled_from(NORMALIZATION_TYPES)),
        positional_embedding_type=pos,
        use_bias=draw(st.booleans()),
        use_attn_result=draw(st.booleans()),
        use_split_qkv_input=draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)),
    )
    if draw(st.booleans()):
        kw["d_vocab_out"] = draw(st.integers(1, 40))
    if not attn_only:
        kw["d_mlp"] = draw(st.integers(1, 64))
        kw["act_fn"] = draw(st.sampled_from(ACT_FNS))
    if pos == "rotary":
        kw["rotary_dim"] = 2 * draw(st.integers(1, d_head // 2))
        kw["rotary_adjacent_pairs"] = draw(st.booleans())
    if pos == "relative":
        kw["relative_window"] = draw(st.integers(1, n_ctx))
    if draw(st.booleans()):
        kw["bos_token_id"] = draw(st.integers(0, d_vocab - 1))
    if draw(st.booleans()):
        kw["embed_init_std"] = draw(st.floats(0.01, 2.0))
    return HookedTransformerConfig(**kw)


@st.composite
def models_and_tokens(draw, configs=None):
    """A model whose every parameter (biases, norm weights included) is non-trivial, and a valid
    token batch for it."""
    cfg = draw(valid_configs() if configs is None else configs)
    model = perturbed(ih.HookedTransformer(cfg), scale=0.3, seed=draw(st.integers(0, 100)))
    batch = draw(st.integers(1, 3))
    pos = draw(st.integers(1, cfg.n_ctx))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    return model, torch.randint(cfg.d_vocab, (batch, pos), generator=g)


def _finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t).all())


# ---------------------------------------------------------------------------------- valid draws
@FUZZ
@given(models_and_tokens())
def test_forward_and_run_with_cache_on_random_models(model_tokens):
    model, tokens = model_tokens
    cfg = model.cfg
    b, p = tokens.shape
    logits = model(tokens)
    assert logits.shape == (b, p, cfg.d_vocab_out) and _finite(logits)
    cached, cache = model.run_with_cache(tokens)
    # explicit path == SDPA path; loosely in float32 (tiny LN widths amplify rounding), to
    # 1e-9 in float64 below
    scale = max(1.0, logits.abs().max().item())
    assert (cached - logits).abs().max() <= 1e-2 * scale
    for l in range(cfg.n_layers):
        pattern = cache[f"blocks.{l}.attn.hook_pattern"]
        assert pattern.shape == (b, cfg.n_heads, p, p) and _finite(pattern)
        assert torch.allclose(pattern.sum(-1), torch.ones(b, cfg.n_heads, p), atol=1e-5)
        assert pattern.triu(1).abs().max() == 0  # causal
        assert cache[f"blocks.{l}.attn.hook_z"].shape == (b, p, cfg.n_heads, cfg.d_head)
        assert cache[f"blocks.{l}.hook_resid_post"].shape == (b, p, cfg.d_model)
        if cfg.use_attn_result:
            assert cache[f"blocks.{l}.attn.hook_result"].shape == (b, p, cfg.n_heads, cfg.d_model)
    for name, act in cache.items():
        if not name.endswith("hook_attn_scores"):  # masked scores are -inf by design
            assert _finite(act), name
    if p >= 2 and tokens[:, 1:].max() >= cfg.d_vocab_out:  # targets the unembedding lacks
        with pytest.raises(ValueError, match="d_vocab_out"):
            model(tokens, return_type="loss")
    elif p >= 2:
        loss = model(tokens, return_type="loss")
        assert loss.shape == () and _finite(loss)
        per_token = model(tokens, return_type="loss", loss_per_token=True)
        assert per_token.shape == (b, p - 1) and _finite(per_token)


@FUZZ
@given(models_and_tokens())
def test_explicit_and_fast_attention_agree_in_float64(model_tokens):
    """No silent wrong answer between the two attention paths, on any architecture."""
    model, tokens = model_tokens
    model = model.double()
    fast = model(tokens)
    explicit, _ = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    assert torch.allclose(fast, explicit, atol=1e-9, rtol=1e-9)


def _task_for(cfg: HookedTransformerConfig):
    """A task this model can train on: repeated tokens where they fit, else Markov chains."""
    vocab = min(cfg.d_vocab, cfg.d_vocab_out)
    bos = cfg.bos_token_id if cfg.bos_token_id is not None and cfg.bos_token_id < vocab else None
    if cfg.n_ctx >= 4 and vocab - (bos is not None) >= 2:
        content = cfg.n_ctx + (bos is None)
        return RepeatedTokens(
            d_vocab=vocab,
            seq_len=cfg.n_ctx,
            min_period=2,
            max_period=min(content // 2, vocab - (bos is not None)),
            held_out_periods=(),
            bos_token_id=bos,
        )
    return MarkovICL(n_states=max(vocab, 2), seq_len=cfg.n_ctx)


@pytest.mark.slow
@FUZZ
@given(
    cfg=valid_configs(),
    lr=st.sampled_from([1e-3, 1e-2]),
    schedule=st.sampled_from(["constant", "cosine"]),
)
def test_a_few_training_steps_on_random_models(cfg, lr, schedule):
    task = _task_for(cfg)
    if task.d_vocab > cfg.d_vocab_out:  # d_vocab_out 1: no task fits, and that must be said
        with pytest.raises(ValueError, match="d_vocab_out"):
            ih.train(ih.HookedTransformer(cfg), task, ih.TrainConfig(steps=1, progress=False))
        return
    # The head-score probe logged while training needs two repeats of a period >= 2; contexts and
    # vocabularies too small for it log NaN scores (undefined), never crash.
    bos = cfg.bos_token_id is not None
    probe_fits = min((cfg.n_ctx - bos) // 2, cfg.d_vocab - bos) >= 2
    recipe = ih.TrainConfig(
        steps=3,
        batch_size=2,
        lr=lr,
        schedule=schedule,
        eval_every=2,
        eval_batch_size=2,
        n_checkpoints=2,
        progress=False,
        device="cpu",
    )
    run = ih.train(ih.HookedTransformer(cfg), task, recipe)
    rows = run.metrics
    assert list(rows.step) == [0, 2, 3]
    assert all(math.isfinite(v) for v in rows.eval_loss)
    assert all(math.isfinite(v) for v in rows.train_loss.iloc[1:])
    pm = rows.prefix_matching.iloc[-1]
    assert len(pm) == cfg.n_layers and all(len(r) == cfg.n_heads for r in pm)
    for col in ("best_prefix_matching", "best_previous_token"):
        assert all(math.isfinite(v) == probe_fits for v in rows[col]), col
    assert all(_finite(p) for p in run.model.parameters())


@FUZZ
@given(models_and_tokens(valid_configs()))
def test_detect_on_random_models(model_tokens):
    """A report with one finite score per head, or a ValueError saying which size is too small
    for a probe (n_ctx or d_vocab)."""
    model, _ = model_tokens
    cfg = model.cfg
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "probe shortened to fit n_ctx"
            report = ih.detect(model, n_samples=2, batch_size=1)
    except ValueError as e:
        assert "n_ctx" in str(e) or "d_vocab" in str(e), str(e)
        return
    for name, value in report.scores.items():
        assert value.shape == (cfg.n_layers, cfg.n_heads), name
        if name == "k_composition":
            value = value[1:]  # layer 0 has no earlier layer to compose with: NaN by design
        if name == "copying_eigen" and cfg.d_vocab_out != cfg.d_vocab:
            assert torch.isnan(value).all()  # the OV circuit is not square: undefined
            continue
        assert _finite(value), name
    pm = report.scores["prefix_matching"]
    assert ((pm >= 0) & (pm <= 1 + 1e-5)).all()
    assert repr(report) and report.table()


def _mean_logit(logits, batch) -> float:
    return float(logits.detach().float().mean())


@FUZZ
@given(models_and_tokens(), st.sampled_from(["zero", "mean", "pattern_preserving"]))
def test_ablation_on_random_models(model_tokens, mode):
    """Every head's ablation effect is a finite number whatever the architecture, and the
    context manager reproduces the scan's effect of the head it ablates; sequences too short to
    score give a ValueError saying so."""
    model, tokens = model_tokens
    cfg = model.cfg
    reference = {"reference": tokens} if mode == "mean" else {}
    if tokens.shape[1] < 3:
        with pytest.raises(ValueError, match="at least 3 tokens"):
            ih.ablation_scan(model, tokens, _mean_logit, mode, **reference)
        return
    scan = ih.ablation_scan(model, tokens, _mean_logit, mode, **reference)
    effect = scan.scores["_mean_logit"]
    assert effect.shape == (cfg.n_layers, cfg.n_heads) and _finite(effect)
    assert math.isfinite(scan.clean["_mean_logit"])
    head = (cfg.n_layers - 1, cfg.n_heads - 1)
    with ih.ablate(model, [head], mode=mode, **reference):
        logits = model(tokens)
    assert logits.shape == (*tokens.shape, cfg.d_vocab_out) and _finite(logits)
    assert _mean_logit(logits, None) - scan.clean["_mean_logit"] == pytest.approx(
        float(effect[head]), abs=1e-4, rel=1e-4
    )


# ---------------------------------------------------------------------------------- invalid configs
NOT_POSITIVE_INT = [0, -3, 2.5, "4", None, True, float("nan")]
NOT_POSITIVE_FLOAT = [0, -0.5, float("nan"), float("inf"), "1e-5", True, None]
NOT_BOOL = [1, 0, "yes", None]
INVALID = {
    "n_layers": NOT_POSITIVE_INT,
    "d_model": NOT_POSITIVE_INT,
    "n_ctx": NOT_POSITIVE_INT,
    "d_head": NOT_POSITIVE_INT,
    "n_heads": [0, -3, 2.5, "4", None, True],  # -1 means "d_model // d_head" (TL)
    "d_vocab": NOT_POSITIVE_INT + [-1],
    "d_vocab_out": [0, -3, 2.5, "4", None, True],  # -1 means "d_vocab" (TL)
    "eps": NOT_POSITIVE_FLOAT,
    "attn_scale": [0, -0.5, float("nan"), float("inf"), "2", True, None],  # -1: sqrt(d_head)
    "initializer_range": [0, -0.5, float("nan"), float("inf"), "0.1", True, None],
    "embed_init_std": [0, -0.5, float("nan"), float("inf"), "1", True],
    "normalization_type": ["layer", "ln", "RMSnorm", 1],
    "positional_embedding_type": ["sinusoidal", None, "", "Rotary"],
    "attn_only": NOT_BOOL,
    "use_bias": NOT_BOOL,
    "use_attn_scale": NOT_BOOL,
    "use_attn_result": NOT_BOOL,
    "use_split_qkv_input": NOT_BOOL,
    "rotary_adjacent_pairs": NOT_BOOL,
    "init_weights": NOT_BOOL,
    "seed": [1.5, "0", True],
    "bos_token_id": [-1, 10**6, 1.5, "0", True],
    "model_name": [5, None, ["a"]],
}


@FUZZ
@given(cfg=valid_configs(), data=st.data())
def test_invalid_config_values_are_refused_naming_the_field(cfg, data):
    field = data.draw(st.sampled_from(sorted(INVALID)), label="field")
    value = data.draw(st.sampled_from(INVALID[field]), label="value")
    d = cfg.to_dict()
    d[field] = value
    with pytest.raises((ValueError, TypeError), match=field):
        HookedTransformerConfig.from_dict(d)


@FUZZ
@given(cfg=valid_configs(), data=st.data())
def test_invalid_dependent_fields_are_refused_naming_the_field(cfg, data):
    d = cfg.to_dict()
    case = data.draw(
        st.sampled_from(["rotary_dim", "relative_window", "d_mlp", "act_fn", "unknown"])
    )
    if case == "rotary_dim":
        if cfg.positional_embedding_type == "rotary":
            d["rotary_dim"] = data.draw(st.sampled_from([0, 1, 3, cfg.d_head + 2, -2, 2.0]))
        else:
            d["rotary_dim"] = 2  # only meaningful with rotary positions
    elif case == "relative_window":
        if cfg.positional_embedding_type == "relative":
            d["relative_window"] = data.draw(st.sampled_from([0, -1, 1.5, "3"]))
        else:
            d["relative_window"] = 4
    elif case in ("d_mlp", "act_fn"):
        if cfg.attn_only:
            d[case] = 8 if case == "d_mlp" else "relu"  # an attention-only model has no MLP
        else:
            d[case] = data.draw(
                st.sampled_from([0, -4, 2.5]) if case == "d_mlp" else st.just("tanh")
            )
    else:
        case = "n_layer"  # a typo must not silently fall back to a default
        d[case] = 2
    with pytest.raises((ValueError, TypeError), match=case):
        HookedTransformerConfig.from_dict(d)


# ---------------------------------------------------------------------------------- invalid inputs
@FUZZ
@given(model_tokens=models_and_tokens(), data=st.data())
def test_invalid_inputs_are_refused_naming_the_problem(model_tokens, data):
    model, tokens = model_tokens
    cfg = model.cfg
    b, p = tokens.shape
    case = data.draw(
        st.sampled_from(
            [
                "float",
                "bool",
                "list",
                "too_high",
                "negative",
                "empty_batch",
                "empty_pos",
                "too_long",
                "3d",
                "return_type",
                "loss_of_one_token",
            ]
        ),
        label="case",
    )
    kwargs = {}
    if case == "float":
        bad, match = tokens.float(), "integer"
    elif case == "bool":
        bad, match = tokens.bool(), "integer"
    elif case == "list":
        bad, match = tokens.tolist(), "torch.Tensor"
    elif case == "too_high":
        bad, match = tokens.clone(), "d_vocab"
        bad[data.draw(st.integers(0, b - 1)), data.draw(st.integers(0, p - 1))] = (
            cfg.d_vocab + data.draw(st.integers(0, 5))
        )
    elif case == "negative":
        bad, match = tokens.clone(), "d_vocab"
        bad[0, data.draw(st.integers(0, p - 1))] = -data.draw(st.integers(1, 5))
    elif case == "empty_batch":
        bad, match = tokens[:0], "empty"
    elif case == "empty_pos":
        bad, match = tokens[:, :0], "empty"
    elif case == "too_long":
        bad, match = (
            torch.zeros(b, cfg.n_ctx + data.draw(st.integers(1, 5)), dtype=torch.long),
            "n_ctx",
        )
    elif case == "3d":
        bad, match = tokens[None], r"\[batch, pos\]"
    elif case == "return_type":
        bad, match = tokens, "return_type"
        kwargs = {"return_type": data.draw(st.sampled_from(["logit", "losses", 1]))}
    else:
        bad, match = tokens[:, :1], "at least 2 tokens"
        kwargs = {"return_type": data.draw(st.sampled_from(["loss", "both"]))}
    with pytest.raises((ValueError, TypeError), match=match):
        model(bad, **kwargs)
    if not kwargs:
        with pytest.raises((ValueError, TypeError), match=match):
            model.run_with_cache(bad)


# ---------------------------------------------------------------------------------- TrainConfig
TRAIN_INVALID = {
    "steps": [-1, 2.5, "10", None, True],
    "batch_size": [0, -2, 2.5, "8", None, True],
    "lr": [0, -1e-3, float("nan"), float("inf"), "1e-3", None, True],
    "betas": [(0.9, 1.0), (-0.1, 0.9), (0.9,), "0.9", None],
    "weight_decay": [-0.1, float("nan"), float("inf"), "0", None, True],
    "warmup_steps": [-1, 2.5, "5", None, True],
    "schedule": ["linear", None, ""],
    "min_lr_ratio": [-0.5, 1.5, float("nan"), "0.1", None, True],
    "grad_clip": [0, -1.0, float("nan"), "1.0", True],
    "seed": [1.5, "0", None, True],
    "device": ["tpu", "", 3],
    "eval_every": [0, -1, 2.5, None],
    "eval_batch_size": [0, -1, 2.5, None],
    "n_checkpoints": [1, 0, 2.5, "50", None],
    "checkpoint_steps": [(-1,), (5, 10**6), ("3",), 5],
    "log_every": [0, -1, 2.5, None],
    "amp": ["yes", None, 1],
    "compile": [None, 1, ""],  # True/False or a torch.compile backend name
    "cpu_threads": [0, -1, 2.5, True, "2"],
    "progress": ["no", None, 0],
    "head_scores": ["no", None, 0],
}


@FUZZ
@given(data=st.data())
def test_invalid_train_config_values_are_refused_naming_the_field(data):
    field = data.draw(st.sampled_from(sorted(TRAIN_INVALID)), label="field")
    value = data.draw(st.sampled_from(TRAIN_INVALID[field]), label="value")
    with pytest.raises((ValueError, TypeError), match=field):
        ih.TrainConfig.from_dict(
            {"steps": 100, field: value} if field != "steps" else {field: value}
        )


@settings(max_examples=200, deadline=None)
@given(total=st.integers(0, 10**7), n=st.integers(2, 64))
def test_checkpoint_schedules_hold_n_steps_from_0_to_the_last(total, n):
    """Found by the training fuzz: n_checkpoints=2 used to give [0, 1], so a run never saved
    (or evaluated) its final step."""
    steps = checkpoint_schedule(total, n)
    assert steps[0] == 0 and steps[-1] == total and steps == sorted(set(steps))
    assert len(steps) == min(n, total + 1)


def test_the_strategies_cover_every_positional_type_and_norm():
    """The fuzz tests above can only be as wide as their strategy: check it reaches everything."""
    seen = set()

    @settings(max_examples=300, deadline=None, database=None)
    @given(valid_configs())
    def collect(cfg):
        seen.add(("pos", cfg.positional_embedding_type))
        seen.add(("norm", cfg.normalization_type))
        seen.add(("mlp", cfg.attn_only))
        seen.add(("layers", cfg.n_layers))
        seen.add(("heads", cfg.n_heads))

    collect()
    expected = {("pos", p) for p in POSITIONAL_EMBEDDING_TYPES}
    expected |= {("norm", n) for n in NORMALIZATION_TYPES} | {("mlp", True), ("mlp", False)}
    expected |= {("layers", n) for n in (1, 2, 3)} | {("heads", n) for n in (1, 2, 3, 4)}
    assert expected <= seen
