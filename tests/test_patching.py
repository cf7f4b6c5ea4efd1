import pytest
import torch

import inducthead as ih
from inducthead.causal import default_data
from inducthead.causal.patching import patch_heads, path_patch, shuffled
from inducthead.model import induction_circuit


def capture(store: list):
    """A metric recording the logits it sees (clean, corrupted, patched in that order)."""

    def logits_metric(logits, batch):
        store.append(logits.detach().clone())
        return 0.0

    return logits_metric


@pytest.fixture(scope="module")
def demo_data(demo_model):
    return default_data(demo_model, n_samples=16)


def split_qkv_copy(model):
    """The same weights in a model with per-head Q/K/V inputs (`blocks.{l}.hook_k_input`)."""
    twin = ih.HookedTransformer(model.cfg.replace(use_split_qkv_input=True))
    twin.load_state_dict(model.state_dict())
    return twin.eval()


@pytest.mark.parametrize("via", ["k", "q", "v"])
@pytest.mark.parametrize("corruption", ["tokens", "ablation"])
def test_path_patch_equals_a_direct_computation(demo_model, demo_data, via, corruption):
    """Direct computation: the sender's (clean - corrupted) write z @ W_O added to the receiver's
    own per-head `hook_{via}_input` copy of the residual stream, all else corrupted."""
    sender, receiver = (0, 0), (1, 1)
    clean = demo_data.tokens
    corrupted = shuffled(demo_data, seed=3).tokens if corruption == "tokens" else clean
    store: list = []
    path_patch(
        demo_model,
        sender,
        receiver,
        via,
        demo_data,
        corrupted if corruption == "tokens" else None,
        metric=capture(store),
    )
    twin = split_qkv_copy(demo_model)
    z = "blocks.0.attn.hook_z"
    ablate_sender = []
    if corruption == "ablation":

        def zero_sender(act, hook):
            act[:, :, sender[1]] = 0.0
            return act

        ablate_sender = [(z, zero_sender)]
    _, c_cache = twin.run_with_cache(clean)
    with twin.hooks(fwd_hooks=ablate_sender):
        _, x_cache = twin.run_with_cache(corrupted)
    W_O = twin.W_O[sender]
    delta = (c_cache[z][:, :, sender[1]] - x_cache[z][:, :, sender[1]]) @ W_O

    def add(act, hook):
        act[:, :, receiver[1]] += delta
        return act

    with torch.no_grad():
        expected = twin.run_with_hooks(
            corrupted, fwd_hooks=ablate_sender + [(f"blocks.1.hook_{via}_input", add)]
        )
    torch.testing.assert_close(store[2], expected, atol=2e-5, rtol=0)
    assert not torch.allclose(store[2], store[1], atol=1e-3)  # the patch did something


def test_path_patch_equals_transformerlens_direct_path_on_a_gpt2_bridge(tiny_gpt2_dir):
    """LayerNorm and MLPs included: TL's `get_act_patch_direct_path` (split-QKV forks)."""
    from transformer_lens.patching import get_act_patch_direct_path

    bridge = ih.load_pretrained(tiny_gpt2_dir)
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(1, 64, (4, 30), generator=g)
    corrupted = torch.randint(1, 64, (4, 30), generator=g)
    clean[:, 0] = corrupted[:, 0] = 0
    _, clean_cache = bridge.run_with_cache(clean)
    _, corrupted_cache = bridge.run_with_cache(corrupted)

    def tl_metric(logits):
        return logits[:, -1, 7].mean()

    for via in ("k", "q"):
        theirs = get_act_patch_direct_path(
            bridge, corrupted, clean_cache, corrupted_cache, tl_metric, 0, 2, via, verbose=False
        )
        for head in range(4):
            ours = path_patch(
                bridge, (0, 2), (1, head), via, clean, corrupted, lambda lg, b: tl_metric(lg)
            )
            assert ours.patched["<lambda>"] == pytest.approx(float(theirs[1, head]), abs=1e-5)


def test_k_composition_in_the_hand_built_circuit():
    model, roles = induction_circuit(d_vocab=24, n_ctx=64)
    data = default_data(model, n_samples=16)
    k = path_patch(model, roles.previous_token, roles.induction, "k", data)
    assert k.attention["clean"] == pytest.approx(1.0, abs=1e-3)
    assert k.attention["corrupted"] < 0.2
    assert k.attention["patched"] == pytest.approx(k.attention["clean"], abs=1e-5)
    for via in ("q", "v"):  # the induction head reads the previous-token head only via its key
        other = path_patch(model, roles.previous_token, roles.induction, via, data)
        assert other.attention["patched"] == pytest.approx(other.attention["corrupted"], abs=1e-6)
        assert other.patched["loss"] == pytest.approx(other.corrupted["loss"], abs=1e-5)
    # the positional shortcut head does not read the previous-token head at all
    short = path_patch(model, roles.previous_token, roles.positional_shortcut, "k", data)
    assert short.patched["loss"] == pytest.approx(short.corrupted["loss"], abs=1e-5)


def test_k_composition_in_the_demo_model(demo_model, demo_data):
    """Measured: the previous-token head restored into the key alone brings the induction heads'
    attention back (0.04 -> 0.95) and ~90% of the loss; via query or value: nothing."""
    for receiver in [(1, 0), (1, 1)]:
        k = path_patch(demo_model, (0, 0), receiver, "k", demo_data)
        q = path_patch(demo_model, (0, 0), receiver, "q", demo_data)
        assert k.attention["corrupted"] < 0.1 < 0.9 < k.attention["clean"]
        assert k.attention_recovered > 0.9 and k.recovered["loss"] > 0.8
        assert abs(q.attention_recovered) < 0.05 and abs(q.recovered["loss"]) < 0.05
        assert "via k" in repr(k) and "recovered" in repr(k)


@pytest.fixture(scope="module")
def bridge(demo_model):
    return ih.to_bridge(demo_model).eval()  # TL's patching refuses training mode


@pytest.mark.parametrize("site", ["z", "pattern"])
def test_patch_heads_equals_transformerlens_patching_on_a_bridge(
    demo_model, demo_data, bridge, site
):
    from transformer_lens import patching

    corrupted = shuffled(demo_data, seed=1).tokens
    _, clean_cache = bridge.run_with_cache(demo_data.tokens)
    targets, mask = demo_data.targets, demo_data.mask

    def tl_metric(logits):  # loss on the clean targets at induction-predictable positions
        nll = -torch.log_softmax(logits, -1).gather(-1, targets[..., None]).squeeze(-1)
        return nll[mask].mean()

    sweep = (
        patching.get_act_patch_attn_head_out_all_pos
        if site == "z"
        else patching.get_act_patch_attn_head_pattern_all_pos
    )
    theirs = sweep(bridge, corrupted, clean_cache, tl_metric)
    for layer in range(2):
        for head in range(2):
            ours = patch_heads(demo_model, demo_data, corrupted, [(layer, head)], site, "loss")
            assert ours.patched["loss"] == pytest.approx(float(theirs[layer, head]), abs=1e-5)


def test_patching_the_induction_heads_restores_the_clean_run(demo_model, demo_data):
    both = patch_heads(demo_model, demo_data, heads=["L1H0", "L1H1"])  # corrupted: shuffled
    assert both.corrupted["loss"] > 5 > 1 > both.clean["loss"]
    assert both.recovered["loss"] > 0.9  # layer 1 writes the logits: ~all comes back
    assert both.recovered["accuracy"] > 0.9


def test_bad_input(demo_model, demo_data):
    with pytest.raises(ValueError, match="before the receiver"):
        path_patch(demo_model, (1, 0), (1, 1), "k", demo_data)
    with pytest.raises(ValueError, match="via must be one of"):
        path_patch(demo_model, (0, 0), (1, 1), "o", demo_data)
    with pytest.raises(ValueError, match=r"valid layers are 0\.\.1 and heads 0\.\.1"):
        path_patch(demo_model, (0, 0), "L1H7", "k", demo_data)
    with pytest.raises(ValueError, match="same shape"):
        patch_heads(demo_model, demo_data, demo_data.tokens[:, :10], [(1, 0)])
    with pytest.raises(ValueError, match="site must be one of"):
        patch_heads(demo_model, demo_data, None, [(1, 0)], site="result")
