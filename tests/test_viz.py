"""inducthead.viz: circuitsvis views that work offline, on hand-built circuits with known heads."""

import re
import socket
import urllib.request
from pathlib import Path

import circuitsvis
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config

import inducthead as ih
from inducthead import viz
from inducthead.analysis import head_label
from inducthead.model import induction_circuit

BUNDLE = (Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js").read_text("utf-8")
# any external reference a page could load: src=/href= with a scheme or "//", CSS url(), an
# ES import of a URL (static or dynamic)
EXTERNAL = re.compile(
    r"""(?:src|href)\s*=\s*["']?\s*(?:[a-z]+:)?//"""
    r"""|url\(\s*["']?\s*(?:[a-z]+:)?//"""
    r"""|\bimport\b[^;()]*?["']\s*(?:https?:)?//"""
    r"""|\bimport\s*\(\s*["']\s*(?:https?:)?//""",
    re.IGNORECASE,
)
L = 10  # repeated segment of the stripes tests
pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # tiny models: one thread is fastest


@pytest.fixture(scope="module")
def circuit():
    return induction_circuit(d_vocab=24, n_ctx=48)  # shortcut period 25: a decoy at L = 10


@pytest.fixture(scope="module")
def stripes(circuit):
    model, roles = circuit
    heads = [roles.induction, roles.anti_induction, roles.positional_shortcut, roles.previous_token]
    return viz.induction_stripes(model, heads=heads, seq_len=L)


def test_stripe_of_the_induction_head_and_not_of_the_decoys(circuit, stripes):
    _, roles = circuit
    assert stripes.tokens.shape == (1 + 2 * L,) and stripes.tokens[0] == 0  # [BOS] r r
    assert torch.equal(stripes.tokens[1 : L + 1], stripes.tokens[L + 1 :])
    assert stripes.patterns.shape == (4, 1 + 2 * L, 1 + 2 * L)
    q = torch.arange(L + 1, 2 * L + 1)  # queries of the second repeat
    induction = stripes.pattern(roles.induction)
    assert torch.equal(induction[q].argmax(-1), q - L + 1)
    assert (induction[q, q - L + 1] > 0.9).all()
    # the anti-induction head attends the same way (it differs in what it writes)
    assert (stripes.pattern(roles.anti_induction)[q, q - L + 1] > 0.9).all()
    # decoys: a positional head keyed to distance 24 and the previous-token head
    shortcut = stripes.pattern("L1H2")
    assert (shortcut[q, q - L + 1] < 0.1).all()
    assert not torch.equal(shortcut[q].argmax(-1), q - L + 1)
    previous = stripes.pattern(roles.previous_token)
    assert torch.equal(previous[q].argmax(-1), q - 1)
    scores = stripes.stripe_scores
    assert scores[roles.induction] > 0.9 and scores[roles.anti_induction] > 0.9
    assert scores[roles.positional_shortcut] < 0.1 and scores[roles.previous_token] < 0.1
    assert torch.allclose(stripes.patterns.sum(-1), torch.ones(4, 1 + 2 * L), atol=1e-5)


@pytest.mark.filterwarnings("ignore:probe shortened")  # detect's probe on these small contexts
def test_default_heads_come_from_detect(circuit):
    model, roles = circuit
    view = viz.induction_stripes(model, seq_len=L)
    assert view.heads == [roles.induction] and "detect" in view.note
    random_model = ih.HookedTransformer(tiny_config(attn_only=True))
    view = viz.induction_stripes(random_model)  # untrained: detect finds none
    assert view.heads == [(1, h) for h in range(4)] and "no induction head" in view.note
    assert view.period == 12 and view.start == 0  # no BOS: two repeats fill n_ctx 24
    assert len(view.tokens) == 24 and max(view.stripe_scores.values()) < 0.5


def test_attention_is_the_cached_pattern_on_ours_and_on_bridges(circuit, stripes):
    model, _ = circuit
    tokens = stripes.tokens
    _, cache = model.run_with_cache(tokens[None])
    view = viz.attention(model, tokens.tolist(), layer=1)
    assert view.heads == [(1, h) for h in range(4)]
    assert torch.allclose(view.patterns, cache["blocks.1.attn.hook_pattern"][0], atol=1e-6)
    every = viz.attention(model, tokens[None])
    assert len(every.heads) == 8 and every.labels == [str(t) for t in tokens.tolist()]
    picked = viz.attention(model, tokens, layer=0, heads=["L1H2", (0, 1)])  # heads win
    assert picked.heads == [(1, 2), (0, 1)]
    assert torch.allclose(picked.patterns[1], cache["blocks.0.attn.hook_pattern"][0, 1])
    assert torch.equal(viz.attention(model, tokens, layer=-1).patterns, view.patterns)

    bridge = ih.to_bridge(model)
    theirs = viz.attention(bridge, tokens, layer=1)
    assert torch.allclose(theirs.patterns, view.patterns, atol=1e-5)

    from transformer_lens import TransformerBridge, TransformerBridgeConfig

    cfg = TransformerBridgeConfig(
        d_model=16, d_head=4, n_layers=2, n_ctx=20, n_heads=4, d_vocab=30, attn_only=True,
        act_fn="gelu", normalization_type="LN", positional_embedding_type="standard", seed=0,
    )  # fmt: skip
    native = TransformerBridge.boot_native(cfg)
    ids = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6])
    _, cache = native.run_with_cache(ids[None])
    view = viz.attention(native, ids, heads=[(0, 3), (1, 0)])
    assert torch.allclose(view.patterns[0], cache["blocks.0.attn.hook_pattern"][0, 3], atol=1e-6)
    assert torch.allclose(view.patterns[1], cache["blocks.1.attn.hook_pattern"][0, 0], atol=1e-6)


def test_html_is_self_contained_and_rendering_touches_no_network(
    circuit, stripes, monkeypatch, tmp_path
):
    def no_network(*args, **kwargs):
        raise AssertionError("viz tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(circuitsvis.utils.render, "internet_on", no_network)

    notebook = stripes._repr_html_()
    document = stripes.to_html()
    saved = stripes.save(tmp_path / "stripes.html").read_text("utf-8")
    assert saved.startswith("<!DOCTYPE html>") and saved.rstrip().endswith("</html>")
    # a full document also tells the browser to load nothing from anywhere
    assert f'http-equiv="Content-Security-Policy" content="{viz.OFFLINE_CSP}"' in saved
    assert "default-src 'none'" in viz.OFFLINE_CSP
    chunk = BUNDLE[len(BUNDLE) // 2 : len(BUNDLE) // 2 + 300]  # the wheel's JS, inlined
    for html in (notebook, document, saved):
        assert chunk in html and "CircuitsVis.AttentionHeads" in html
        assert not EXTERNAL.search(html), EXTERNAL.search(html)
        assert "unpkg" not in html and "sourceMappingURL" not in html
    # the pattern checks would catch the CDN import circuitsvis itself prints
    assert EXTERNAL.search(str(circuitsvis.attention.attention_heads([[[1.0]]], ["a"])))
    # several views on one page carry the bundle once
    loss = viz.loss_change_tokens(circuit[0], stripes.tokens, ["L1H0"], "zero")
    both = viz.page([stripes, loss], title="two views")
    assert both.count(chunk) == 1 and "CircuitsVis.ColoredTokens" in both
    assert not EXTERNAL.search(both)


def test_labels_cannot_break_out_of_the_script(circuit):
    model, _ = circuit
    labels = ["</script><script>alert(1)</script>", "<!--", "b"]
    html = viz.attention(model, [0, 5, 6], labels=labels).to_html()
    assert "<script>alert(1)" not in html and "<!--" not in html
    assert "\\u003c/script>\\u003cscript>alert(1)" in html


def test_bad_input_says_what_is_wrong(circuit):
    model, _ = circuit
    too_long = torch.arange(49) % 24
    with pytest.raises(ValueError, match=r"49 positions.*n_ctx=48"):
        viz.attention(model, too_long)
    with pytest.raises(ValueError, match=r"labels has 2 entries but tokens has 3"):
        viz.attention(model, [0, 5, 6], labels=["a", "b"])
    with pytest.raises(ValueError, match=r"L2H0 does not exist"):
        viz.attention(model, [0, 5, 6], heads=[(2, 0)])
    with pytest.raises(ValueError, match=r"L0H4 does not exist"):
        viz.attention(model, [0, 5, 6], heads=["L0H4"])
    with pytest.raises(ValueError, match=r"layer 2 does not exist"):
        viz.attention(model, [0, 5, 6], layer=2)
    with pytest.raises(ValueError, match="no tokenizer"):
        viz.attention(model, "some text")
    with pytest.raises(ValueError, match=r"one sequence.*\(2, 3\)"):
        viz.attention(model, torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="d_vocab=24"):
        viz.attention(model, [0, 24])
    with pytest.raises(ValueError, match=r"seq_len must be an int in \[2, 23\]"):
        viz.induction_stripes(model, heads=["L1H0"], seq_len=24)
    with pytest.raises(ValueError, match="mode must be one of"):
        viz.loss_change_tokens(model, [0, 5, 6], ["L1H0"], ablation="resample")


@pytest.mark.parametrize("mode", ["zero", "mean", "pattern_preserving"])
def test_loss_change_equals_the_ablated_minus_clean_loss(circuit, stripes, mode):
    model, roles = circuit
    tokens = stripes.tokens
    view = viz.loss_change_tokens(model, tokens, [roles.induction], ablation=mode)
    # independently: the causal package's ablation as a context manager, cross-entropy by hand
    batch = tokens[None]
    reference = batch if mode == "mean" else None
    with torch.no_grad():
        clean = F.cross_entropy(model(batch)[0, :-1], tokens[1:], reduction="none")
        with ih.ablate(model, [roles.induction], mode=mode, reference=reference):
            ablated = F.cross_entropy(model(batch)[0, :-1], tokens[1:], reduction="none")
    assert torch.isnan(view.values[0]) and torch.isnan(view.clean[0])
    torch.testing.assert_close(view.clean[1:], clean, atol=1e-5, rtol=0)
    torch.testing.assert_close(view.ablated[1:], ablated, atol=1e-5, rtol=0)
    torch.testing.assert_close(view.values[1:], ablated - clean, atol=1e-5, rtol=0)
    # the induction head predicts the second repeat: without it those tokens' loss rises
    assert (view.values[L + 2 :] > 1.0).all()
    df = view.to_dataframe()
    assert len(df) == len(tokens) and df["change"].iloc[-1] == pytest.approx(float(view.values[-1]))
    props = view.props()
    assert props["values"][0] == 0.0 and props["minValue"] == -props["maxValue"]
    assert props["tokens"] == [f"{t} " for t in tokens.tolist()]  # ids drawn apart
    assert view.labels == [str(t) for t in tokens.tolist()]


def test_text_model_tokenizes_and_labels(tiny_gpt2_dir):
    bridge = ih.load_pretrained(tiny_gpt2_dir)
    text = "w1 w2 w3 w4 w1 w2 w3 w4"
    view = viz.attention(bridge, text, layer=0)
    tokens = bridge.to_tokens(text)
    assert torch.equal(view.tokens, tokens[0].cpu()) and view.labels[0] == "<bos>"
    assert view.labels == bridge.to_str_tokens(tokens[0])
    _, cache = bridge.run_with_cache(tokens)
    assert torch.allclose(view.patterns, cache["blocks.0.attn.hook_pattern"][0], atol=1e-6)
    with pytest.raises(ValueError, match=r"129 positions.*n_ctx=128"):
        viz.attention(bridge, " ".join(["w5"] * 128))  # + BOS: never silently truncated

    heads = ["L1H0", "L1H3"]
    view = viz.loss_change_tokens(bridge, text, heads, ablation="mean")
    with torch.no_grad():
        clean = F.cross_entropy(bridge(tokens)[0, :-1], tokens[0, 1:], reduction="none")
        with ih.ablate(bridge, heads, mode="mean", reference=tokens):
            ablated = F.cross_entropy(bridge(tokens)[0, :-1], tokens[0, 1:], reduction="none")
    torch.testing.assert_close(view.values[1:], (ablated - clean).cpu(), atol=1e-5, rtol=0)
    assert view.labels[1] == "w1" and "1 x 9 tokens" in view.reference
    assert view.props()["tokens"] == view.labels  # the tokenizer's strings, as they are

    from transformers import AutoTokenizer

    from inducthead.model import from_hf_gpt2

    ours = from_hf_gpt2(tiny_gpt2_dir)  # the same weights in our model, given the tokenizer
    ours.set_tokenizer(AutoTokenizer.from_pretrained(tiny_gpt2_dir))
    mine = viz.attention(ours, text, layer=0)
    assert mine.labels == bridge.to_str_tokens(tokens[0]) and torch.equal(mine.tokens, tokens[0])
    assert torch.allclose(mine.patterns, cache["blocks.0.attn.hook_pattern"][0], atol=1e-5)
    with pytest.raises(ValueError, match=r"129 positions.*n_ctx=128"):
        viz.attention(ours, " ".join(["w5"] * 128))


def test_reprs_say_what_which_heads_and_how_long(circuit, stripes):
    model, _ = circuit
    r = repr(stripes)
    assert "induction stripes" in r and "2 x 10" in r and "L1H0 1.00" in r and "L1H2 0.0" in r
    view = viz.attention(model, stripes.tokens, layer=1)
    assert repr(view) == "AttentionView(attention of L1H0, L1H1, L1H2, L1H3 on 21 tokens " \
        "(handbuilt-induction))"  # fmt: skip
    with pytest.raises(ValueError, match="induction_stripes"):
        _ = view.stripe_scores
    loss = viz.loss_change_tokens(model, stripes.tokens, ["L1H0"], ablation="zero")
    r = repr(loss)
    assert r.startswith("LossChangeView(loss change when zero-ablating L1H0 on 21 tokens")
    assert "mean change +" in r


def test_plot_draws_each_head_on_the_score_scale(circuit, stripes):
    import matplotlib.pyplot as plt

    _, roles = circuit
    before = plt.get_fignums()
    fig = stripes.plot()
    assert plt.get_fignums() == before  # shown once in Jupyter, never queued in pyplot
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 4
    for image, head, pattern in zip(images, stripes.heads, stripes.patterns, strict=True):
        data = np.asarray(image.get_array().filled(np.nan), dtype=float)
        lower = np.tril(np.ones(pattern.shape, dtype=bool))
        assert np.allclose(data[lower], pattern.numpy()[lower])
        assert np.isnan(data[~lower]).all()  # the future is blank, not zero
        assert image.get_clim() == (0.0, 1.0)
        assert image.axes.get_title().startswith(f"{head_label(head)}  (stripe ")
    titles = [image.axes.get_title() for image in images]
    assert f"(stripe {stripes.stripe_scores[roles.induction]:.2f})" in titles[0]
    assert "stripe at key = query - 9" in fig._suptitle.get_text()
    plain = viz.attention(circuit[0], stripes.tokens, layer=0).plot()
    assert "stripe" not in plain._suptitle.get_text()
