import math

import pytest
import torch
from conftest import perturbed

import inducthead as ih
from inducthead.analysis import ModelAdapter
from inducthead.causal.ablation import ablate, pattern_hooks, record_patterns
from inducthead.causal.data import batch_from_tokens, default_data
from inducthead.causal.metrics import (
    METRICS,
    evaluate,
    forward,
    icl_positions,
    icl_score,
    loss_by_position,
    no_context_baseline,
)
from inducthead.causal.scan import ablation_scan
from inducthead.model import induction_circuit
from inducthead.tasks.probes import repeated_probe

SHORTCUT = 16  # the hand-built positional shortcut's period: right on half the data


@pytest.fixture(scope="module")
def circuit():
    """Hand-built circuit where the anti-induction head matters: induction (+6) minus
    anti-induction (-4) leaves the correct token +2, less than the positional shortcut's +3 on
    the token SHORTCUT - 1 positions back. Data: [BOS] + distinct tokens repeated (no noise, so
    each induction target is unique), period 16 (the shortcut agrees: correct) for half the
    sequences, period 11 (the shortcut wins: wrong) for the other half: accuracy about 1/2."""
    model, roles = induction_circuit(
        d_vocab=24,
        n_ctx=64,
        shortcut_period=SHORTCUT,
        induction_strength=6.0,
        anti_strength=4.0,
        shortcut_strength=3.0,
    )
    tokens = torch.cat(
        [
            repeated_probe(24, period, n_samples=16, bos_token_id=0, seed=i, length=62)
            for i, period in enumerate([11, SHORTCUT])
        ]
    )
    return model, roles, batch_from_tokens(tokens)


@pytest.fixture(scope="module")
def circuit_scan(circuit):
    model, _, batch = circuit
    return ablation_scan(model, batch, ["loss", "accuracy"], "zero")


@pytest.fixture(scope="module")
def demo_data(demo_model):
    return default_data(demo_model, n_samples=32)


def test_hand_built_induction_head_destroys_and_anti_induction_raises_accuracy(
    circuit, circuit_scan
):
    _, roles, _ = circuit
    acc = circuit_scan.clean["accuracy"]
    assert 0.3 < acc < 0.7
    ablated = circuit_scan.ablated["accuracy"]
    assert ablated[roles.induction] < 0.02  # destroyed
    assert ablated[roles.anti_induction] > 0.98  # raised to ~1
    assert circuit_scan.scores["loss"][roles.induction] > 2.0
    assert circuit_scan.scores["loss"][roles.anti_induction] < -0.5
    assert circuit_scan.strongest("loss", 1) == [roles.induction]


def test_zero_heads_change_nothing_exactly(circuit, circuit_scan):
    model, roles, batch = circuit
    adapter = ModelAdapter.wrap(model)
    for head in roles.zero:
        for name in ("loss", "accuracy"):
            assert circuit_scan.scores[name][head] == 0.0
    clean = forward(model, batch.tokens)
    for mode in ("zero", "mean", "pattern_preserving"):
        with ablate(model, list(roles.zero), mode=mode):
            ablated = forward(model, batch.tokens)
        ref = clean
        if mode == "pattern_preserving":  # patterns hooked: the explicit attention path
            kept = pattern_hooks(adapter, record_patterns(adapter, batch.tokens))
            ref = forward(model, batch.tokens, kept)
        assert torch.equal(ablated, ref), mode


def test_previous_token_head_zero_vs_pattern_preserving(circuit, demo_model, demo_data):
    """Its effect flows through layer-1 attention patterns: devastating when zeroed, (nearly)
    nothing when every pattern is kept."""
    model, roles, batch = circuit
    zero = ablation_scan(model, batch, "loss", "zero", heads=[roles.previous_token])
    kept = ablation_scan(model, batch, "loss", "pattern_preserving", heads=[roles.previous_token])
    assert zero.scores["loss"][roles.previous_token] > 1.0
    # hand-built layer-1 values read only the token subspace: exactly no effect
    assert abs(kept.scores["loss"][roles.previous_token]) < 1e-6
    zero = ablation_scan(demo_model, demo_data, ["loss", "accuracy"], "zero")
    kept = ablation_scan(demo_model, demo_data, ["loss", "accuracy"], "pattern_preserving")
    baseline = no_context_baseline(demo_data)
    # demo, measured: +4.43 nats (to ~the no-context baseline) vs -0.007
    assert zero.ablated["loss"][0, 0] > 0.9 * baseline["loss"]
    assert zero.scores["accuracy"][0, 0] < -0.8
    assert abs(kept.scores["loss"][0, 0]) < 0.05
    assert abs(kept.scores["accuracy"][0, 0]) < 0.01
    # layer-1 heads have nothing downstream: both modes agree there
    torch.testing.assert_close(zero.scores["loss"][1], kept.scores["loss"][1], atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def bridge(demo_model):
    return ih.to_bridge(demo_model)


def test_zero_ablation_equals_transformerlens_hooks_on_a_bridge(demo_model, demo_data, bridge):
    ours = ablation_scan(demo_model, demo_data, ["loss", "accuracy", "logit_diff"], "zero")
    on_bridge = ablation_scan(bridge, demo_data, ["loss", "accuracy", "logit_diff"], "zero")
    n_layers, n_heads = demo_model.cfg.n_layers, demo_model.cfg.n_heads
    for layer in range(n_layers):
        for head in range(n_heads):

            def zero_head(z, hook, head=head):
                z[:, :, head] = 0.0
                return z

            with torch.no_grad():
                logits = bridge.run_with_hooks(
                    demo_data.tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", zero_head)]
                )
            theirs = evaluate(METRICS, logits, demo_data)
            for name in ours.scores:
                assert ours.ablated[name][layer, head] == pytest.approx(theirs[name], abs=1e-5)
                assert on_bridge.ablated[name][layer, head] == pytest.approx(theirs[name], abs=1e-5)


def test_mean_and_pattern_preserving_agree_on_a_bridge(demo_model, demo_data, bridge):
    reference = default_data(demo_model, n_samples=8, seed=1)
    for mode in ("mean", "pattern_preserving"):
        ref = reference if mode == "mean" else None
        ours = ablation_scan(demo_model, demo_data, "loss", mode, reference=ref)
        theirs = ablation_scan(bridge, demo_data, "loss", mode, reference=ref)
        torch.testing.assert_close(ours.scores["loss"], theirs.scores["loss"], atol=1e-5, rtol=0)


def test_context_manager_on_a_bridge(demo_model, demo_data, bridge):
    tokens = demo_data.tokens[:8]
    reference = default_data(demo_model, n_samples=8, seed=1)
    for mode in ("zero", "mean", "pattern_preserving"):
        ref = reference if mode == "mean" else None
        with ablate(demo_model, ["L1H0", "L0H1"], mode, ref):
            ours = forward(demo_model, tokens)
        with ablate(bridge, ["L1H0", "L0H1"], mode, ref):
            theirs = forward(bridge, tokens)
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
        assert "forward" not in bridge.__dict__
    assert not torch.allclose(ours, forward(demo_model, tokens), atol=1e-2)


def test_mean_ablation_uses_the_reference_mean_never_zero(demo_model, demo_data):
    reference = default_data(demo_model, n_samples=8, seed=5)
    abl = ablate(demo_model, ["L1H0"], mode="mean", reference=reference)
    _, cache = demo_model.run_with_cache(reference.tokens)
    expected = cache["blocks.1.attn.hook_z"][:, :, 0].mean((0, 1))
    torch.testing.assert_close(abl.values(1)[0], expected)
    assert abl.values(1)[0].abs().sum() > 0
    _, cache = demo_model.run_with_cache(demo_data.tokens[:2])
    z = abl.hooks[0][1](cache["blocks.1.attn.hook_z"].clone(), None)
    torch.testing.assert_close(z[:, :, 0], expected.expand_as(z[:, :, 0]))
    default = ablate(demo_model, ["L1H0"], mode="mean")  # documented default reference
    assert "default repeated-token data" in default.reference
    assert default.values(1)[0].abs().sum() > 0


def test_hooks_and_context_manager_agree(demo_model, demo_data):
    tokens = demo_data.tokens[:8]
    for mode in ("zero", "mean", "pattern_preserving"):
        abl = ablate(demo_model, [(1, 0), (0, 1)], mode=mode)
        via_hooks = forward(demo_model, tokens, abl.hooks_for(tokens))
        with abl:
            inside = forward(demo_model, tokens)
        torch.testing.assert_close(inside, via_hooks, atol=1e-6, rtol=0)
        assert "forward" not in demo_model.__dict__  # the class's forward is back
    assert not any(hp._forward_hooks for hp in demo_model.hook_dict.values())
    both = ablate(demo_model, ["L1H0"], "pattern_preserving").hooks_for(tokens)
    both += ablate(demo_model, ["L0H1"], "pattern_preserving").hooks_for(tokens)[:1]  # its z
    with ablate(demo_model, ["L1H0"], "pattern_preserving"):
        with ablate(demo_model, ["L0H1"], "pattern_preserving"):
            nested = forward(demo_model, tokens)
        torch.testing.assert_close(forward(demo_model, tokens), via_hooks_l1h0(demo_model, tokens))
    torch.testing.assert_close(nested, forward(demo_model, tokens, both), atol=1e-6, rtol=0)
    assert "forward" not in demo_model.__dict__
    with pytest.raises(ValueError, match="hooks_for"):
        ablate(demo_model, ["L1H0"], mode="pattern_preserving").hooks  # noqa: B018


def via_hooks_l1h0(model, tokens):
    return forward(model, tokens, ablate(model, ["L1H0"], "pattern_preserving").hooks_for(tokens))


def test_icl_score_and_loss_by_position(demo_model, demo_data):
    assert icl_positions(1000) == (50, 500)
    assert icl_positions(127) == (13, 126)  # scaled: late -> last position, ratio kept
    assert icl_positions(60, early=5, late=30) == (5, 30)
    with pytest.raises(ValueError, match="early < late"):
        icl_positions(100, early=50, late=50)
    curve = loss_by_position(demo_model, demo_data)
    assert curve.shape == (demo_data.tokens.shape[1],)
    score = icl_score(demo_model, demo_data)
    early, late = icl_positions(len(curve))
    assert (early, late) == (13, 127)
    assert score == pytest.approx(float(curve[late] - curve[early]), abs=1e-5)
    assert score < -3  # the trained demo model learns in context (measured -6.7)
    with ablate(demo_model, ["L1H0", "L1H1"]):
        assert icl_score(demo_model, demo_data) > -1  # measured -0.09: induction is the ICL


def test_metrics_on_known_logits():
    tokens = torch.tensor([[0, 5, 6, 7, 5, 6, 7]])
    batch = batch_from_tokens(tokens)
    assert batch.mask.tolist() == [[False, False, False, False, True, True, False]]
    assert batch.tokens.shape == tokens.shape  # tokens run as given, last one unscored
    logits = torch.zeros(1, 7, 10)
    logits[0, torch.arange(6), batch.targets[0, :6]] = 2.0
    m = evaluate(METRICS, logits, batch)
    assert m["accuracy"] == 1.0
    assert m["logit_diff"] == pytest.approx(2.0)
    assert m["loss"] == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 9)), abs=1e-6)
    assert m["icl_score"] == pytest.approx(0.0, abs=1e-6)


def test_ablation_result_outputs(circuit_scan, tmp_path):
    df = circuit_scan.to_dataframe()
    # the per-head columns hold changes, named as such; the clean values sit beside them
    assert {"label", "delta_loss", "delta_accuracy", "loss_clean"} <= set(df) and len(df) == 8
    assert "loss" not in df and "accuracy" not in df
    row = df.set_index("label").loc["L1H0"]
    assert row["delta_loss"] == pytest.approx(float(circuit_scan.scores["loss"][1, 0]))
    assert "L1H0" in repr(circuit_scan) and "zero ablation" in repr(circuit_scan)
    assert "<table" in circuit_scan._repr_html_()
    circuit_scan.plot()
    assert '"mode": "zero"' in circuit_scan.to_json(tmp_path / "scan.json")


def test_bad_input(demo_model, demo_data):
    with pytest.raises(ValueError, match=r"valid layers are 0\.\.1 and heads 0\.\.1"):
        ablate(demo_model, ["L2H0"])
    with pytest.raises(ValueError, match=r"valid layers are 0\.\.1 and heads 0\.\.1"):
        ablation_scan(demo_model, demo_data, heads=[(0, 5)])
    with pytest.raises(ValueError, match="mode must be one of"):
        ablate(demo_model, [(1, 0)], mode="resample")
    with pytest.raises(ValueError, match="unknown metric"):
        ablation_scan(demo_model, demo_data, "perplexity")
    with pytest.raises(ValueError, match="returned NaN"):
        ablation_scan(demo_model, demo_data, lambda logits, batch: float("nan"))
    no_repeats = torch.arange(1, 33).repeat(2, 1)  # no token repeats: an empty mask
    with pytest.raises(ValueError, match="returned NaN.*0 positions"):
        ablation_scan(demo_model, no_repeats, "loss", heads=["L1H0"])
    with pytest.raises(ValueError, match="only used by mode='mean'"):
        ablate(demo_model, [(1, 0)], reference=demo_data)


def test_duck_typed_transformerlens3_model(circuit, circuit_scan):
    from test_adapters import LegacyHookedTransformer

    class Legacy(LegacyHookedTransformer):  # plus the TL 3 methods ablations use
        def forward(self, tokens, **kwargs):
            return self.inner(tokens, **kwargs)

        def hooks(self, *args, **kwargs):
            return self.inner.hooks(*args, **kwargs)

        def run_with_hooks(self, tokens, fwd_hooks=(), **kwargs):
            with self.inner.hooks(fwd_hooks=list(fwd_hooks)):
                return self(tokens, **kwargs)

    model, roles, batch = circuit
    legacy = Legacy(model)
    theirs = ablation_scan(legacy, batch, ["loss", "accuracy"], "zero")
    for name in ("loss", "accuracy"):
        torch.testing.assert_close(theirs.scores[name], circuit_scan.scores[name])
    kept = ablation_scan(legacy, batch, "loss", "pattern_preserving", heads=[roles.induction])
    assert kept.scores["loss"][roles.induction] == pytest.approx(
        float(circuit_scan.scores["loss"][roles.induction]), abs=1e-4
    )


def test_pattern_preserving_context_runs_your_hooks_once_and_raises_their_errors(demo_model):
    tokens = default_data(demo_model, n_samples=4).tokens
    calls = []

    def count(x, hook):
        calls.append(x.shape)
        return x

    hooks = [("blocks.1.hook_resid_post", count)]
    with ablate(demo_model, ["L1H0"], "pattern_preserving"):
        inside = demo_model.run_with_hooks(tokens, fwd_hooks=hooks)
    assert len(calls) == 1  # once per forward, on the ablated pass
    expected = forward(
        demo_model, tokens, ablate(demo_model, ["L1H0"], "pattern_preserving").hooks_for(tokens)
    )
    torch.testing.assert_close(inside, expected)

    def fail_once(x, hook, state={"n": 0}):  # noqa: B006 - counts its calls
        state["n"] += 1
        if state["n"] == 1:
            raise RuntimeError("the first pass fails")
        return x

    with ablate(demo_model, ["L1H0"], "pattern_preserving"), pytest.raises(RuntimeError):
        demo_model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.hook_resid_post", fail_once)])


@pytest.mark.parametrize("mode", ["zero", "mean", "pattern_preserving"])
def test_scan_resuming_at_each_layer_equals_full_forwards(mode, monkeypatch):
    """The scan starts each layer's ablated forwards from the clean residual entering that
    layer; every effect equals the scan that runs every block from the tokens, and block 0 runs
    only for the clean passes and the layer-0 heads."""
    cfg = ih.HookedTransformerConfig(
        n_layers=3, d_model=32, n_heads=4, d_head=8, d_vocab=31, n_ctx=40, seed=3
    )
    model = perturbed(ih.HookedTransformer(cfg).eval(), scale=0.3)
    data = default_data(model, n_samples=6)
    runs = []
    model.blocks[0].hook_resid_pre.add_hook(lambda x, hook: runs.append(len(x)))
    resumed = ablation_scan(model, data, ["loss", "accuracy"], mode, max_batch=12)
    n_resumed = len(runs)
    runs.clear()
    monkeypatch.setattr(ModelAdapter, "resumes", property(lambda self: False))
    full = ablation_scan(model, data, ["loss", "accuracy"], mode, max_batch=12)
    model.blocks[0].hook_resid_pre.remove_hooks()
    for name in ("loss", "accuracy"):
        torch.testing.assert_close(resumed.scores[name], full.scores[name], atol=1e-6, rtol=1e-5)
        assert resumed.clean[name] == full.clean[name]
    # 4 heads per layer, 2 per forward: full = 2 forwards per layer; resumed = layer 0 only,
    # plus the one pass computing the residual entering layer 1
    assert len(runs) - n_resumed == 2 * 3 - (2 + 1)
