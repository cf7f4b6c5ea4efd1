"""Tokenizer methods and text input (`inducthead.model.text`), against TransformerLens 3's
semantics (its source, re-derived here; TL 3 cannot be imported) and TL 4's TransformerBridge."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import perturbed, tiny_config
from transformers import AutoTokenizer

import inducthead as ih
from inducthead.model.text import padding_mask
from inducthead.testing import word_tokenizer

V = 40  # "<bos>" (0, also EOS and, once set, pad), "<unk>" (1), "w0" (2) ... "w37" (39)


def wid(i: int) -> int:
    return i + 2  # the id of "w{i}"


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok")
    word_tokenizer(path, V)
    return path


@pytest.fixture(scope="module")
def bos_tok_dir(tmp_path_factory, tok_dir):
    """The same vocabulary, but the tokenizer prepends "<bos>" itself (as Llama's does)."""
    from tokenizers import processors

    tok = AutoTokenizer.from_pretrained(tok_dir)
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", 0)]
    )
    path = tmp_path_factory.mktemp("bos-tok")
    tok.save_pretrained(path)
    return path


@pytest.fixture
def tok(tok_dir):
    return AutoTokenizer.from_pretrained(tok_dir)  # fresh: set_tokenizer edits it, as in TL


def make_model(tokenizer=None, **overrides) -> ih.HookedTransformer:
    model = perturbed(ih.HookedTransformer(tiny_config(d_vocab=V, **overrides))).eval()
    if tokenizer is not None:
        model.set_tokenizer(tokenizer)
    return model


# ------------------------------------------------------------------ set_tokenizer
def test_set_tokenizer_bookkeeping_follows_tl3(tok, bos_tok_dir):
    model = make_model()
    assert model.tokenizer is None
    model.set_tokenizer(tok)
    assert model.tokenizer is tok and tok.padding_side == "right"
    assert tok.pad_token == "<bos>" and tok.pad_token_id == 0  # no pad token: the EOS
    assert model.cfg.tokenizer_prepends_bos is False
    model.set_tokenizer(tok, default_padding_side="left")
    assert tok.padding_side == "left"
    model.set_tokenizer(AutoTokenizer.from_pretrained(bos_tok_dir))
    assert model.cfg.tokenizer_prepends_bos is True


def test_the_constructor_takes_a_tokenizer_as_tl3(tok):
    model = ih.HookedTransformer(tiny_config(d_vocab=V), tokenizer=tok, default_padding_side="left")
    assert model.tokenizer is tok and tok.padding_side == "left"
    assert model.to_tokens("w1").tolist() == [[0, wid(1)]]
    with pytest.raises(TypeError, match="tokenizer="):
        ih.HookedTransformer(tiny_config(d_vocab=V), tok)  # TL 3's positional form


def test_set_tokenizer_refuses_what_it_cannot_use(tok):
    with pytest.raises(ValueError, match="d_vocab=23"):
        ih.HookedTransformer(tiny_config()).set_tokenizer(tok)  # 40 ids, 23 embedding rows
    assert tok.pad_token is None  # a refused tokenizer is left untouched
    with pytest.raises(TypeError, match="Hugging Face tokenizer"):
        make_model().set_tokenizer(lambda s: [1, 2])
    with pytest.raises(ValueError, match="default_padding_side"):
        make_model().set_tokenizer(tok, default_padding_side="middle")
    with pytest.warns(UserWarning, match="bos_token_id is 3"):
        make_model(bos_token_id=3).set_tokenizer(tok)


def test_without_a_tokenizer_every_text_method_says_to_set_one():
    model = make_model()
    calls = [
        lambda: model.to_tokens("w1"),
        lambda: model.to_string([2, 3]),
        lambda: model.to_str_tokens("w1"),
        lambda: model.to_single_token("w1"),
        lambda: model.to_single_str_token(2),
        lambda: model.get_token_position("w1", "w1 w2"),
        lambda: model.tokens_to_residual_directions("w1"),
    ]
    for call in calls:
        with pytest.raises(RuntimeError, match=r"set_tokenizer"):
            call()
    for call in (model, model.run_with_cache, lambda x: model.run_with_hooks(x, fwd_hooks=[])):
        with pytest.raises(TypeError, match=r"set_tokenizer\(tokenizer\).*or pass token ids"):
            call("w1 w2")
        with pytest.raises(TypeError, match="set_tokenizer"):
            call(["w1", "w2 w3"])


# ------------------------------------------------------------------ to_tokens / to_string
def test_to_tokens_prepends_bos_by_default_and_on_request(tok):
    model = make_model(tok)
    assert model.to_tokens("w1 w2").tolist() == [[0, wid(1), wid(2)]]
    assert model.to_tokens("w1 w2", prepend_bos=False).tolist() == [[wid(1), wid(2)]]
    assert model.to_tokens("").tolist() == [[0]]
    model.cfg.default_prepend_bos = False
    assert model.to_tokens("w1 w2").tolist() == [[wid(1), wid(2)]]
    assert model.to_tokens("w1 w2", prepend_bos=True).tolist() == [[0, wid(1), wid(2)]]
    assert model.to_tokens("w1").device == model.device
    assert model.to_tokens("w1", move_to_device=False).dtype == torch.long
    with pytest.raises(ValueError, match="prepend_bos"):
        model.to_tokens("w1", prepend_bos="yes")
    with pytest.raises(ValueError, match="padding_side"):
        model.to_tokens("w1", padding_side="top")
    with pytest.raises(TypeError, match="list of strings"):
        model.to_tokens(["w1", 2])


@pytest.mark.parametrize("prepend_bos", [None, True, False])
@pytest.mark.parametrize("side", ["left", "right"])
def test_a_tokenizer_that_prepends_bos_gives_the_same_ids(tok, bos_tok_dir, prepend_bos, side):
    """TL 3's tokenizer_prepends_bos bookkeeping: BOS added or stripped so the ids do not depend
    on whether the tokenizer adds it."""
    texts = ["w1 w2 w3", "w4", ""]
    ours = make_model(tok).to_tokens(texts, prepend_bos, side)
    self_bos = make_model(AutoTokenizer.from_pretrained(bos_tok_dir))
    assert torch.equal(self_bos.to_tokens(texts, prepend_bos, side), ours)


def test_lists_are_padded_with_the_pad_token_on_either_side(tok):
    model = make_model(tok)
    texts = ["w1 w2 w3", "w4"]
    assert model.to_tokens(texts).tolist() == [[0, 3, 4, 5], [0, 6, 0, 0]]  # right (default)
    assert model.to_tokens(texts, padding_side="left").tolist() == [[0, 3, 4, 5], [0, 0, 0, 6]]
    assert model.to_tokens(texts, prepend_bos=False, padding_side="left").tolist() == [
        [3, 4, 5],
        [0, 0, 6],
    ]
    model.set_tokenizer(tok, default_padding_side="left")
    assert model.to_tokens(texts).tolist() == [[0, 3, 4, 5], [0, 0, 0, 6]]


def test_to_tokens_truncates_to_n_ctx_unless_asked_not_to(tok):
    model = make_model(tok)  # n_ctx 24
    text = " ".join(f"w{i}" for i in range(30))
    tokens = model.to_tokens(text)
    assert tokens.shape == (1, 24) and tokens[0, 0] == 0 and tokens[0, -1] == wid(22)
    assert model.to_tokens(text, truncate=False).shape == (1, 31)


def test_to_string_round_trips(tok):
    model = make_model(tok)
    text = "w1 w5 w30 w1"
    assert model.to_string(model.to_tokens(text, prepend_bos=False)[0]) == text
    assert model.to_string(model.to_tokens(text)[0]) == "<bos> " + text
    texts = ["w1 w2", "w3 w4"]
    assert model.to_string(model.to_tokens(texts, prepend_bos=False)) == texts
    assert model.to_string([3, 4]) == "w1 w2"  # lists, arrays, lists of tensors, one id
    assert model.to_string(np.array([[3, 4]])) == ["w1 w2"]
    assert model.to_string([torch.tensor([3]), torch.tensor([4])]) == ["w1", "w2"]
    assert model.to_string(torch.tensor(5)) == "w3"
    with pytest.raises(ValueError, match=r"\[batch, pos\] ids, not \(1, 1, 2\)"):
        model.to_string(torch.zeros(1, 1, 2, dtype=torch.long))


def test_to_str_tokens(tok):
    model = make_model(tok)
    assert model.to_str_tokens("w1 w2") == ["<bos>", "w1", "w2"]
    assert model.to_str_tokens("w1 w2", prepend_bos=False) == ["w1", "w2"]
    ids = model.to_tokens("w7 w8")
    for form in (ids, ids[0], ids.numpy(), ids[0].tolist()):
        assert model.to_str_tokens(form) == ["<bos>", "w7", "w8"]
    assert model.to_str_tokens(torch.tensor(4)) == ["w2"]
    assert model.to_str_tokens(["w1", "w2 w3"]) == [["<bos>", "w1"], ["<bos>", "w2", "w3"]]
    assert model.to_str_tokens([ids[0], ids[0, 1:]]) == [["<bos>", "w7", "w8"], ["w7", "w8"]]
    with pytest.raises(ValueError, match=r"\[1, pos\]"):
        model.to_str_tokens(torch.zeros(2, 3, dtype=torch.long))


def test_single_tokens(tok):
    model = make_model(tok)
    assert model.to_single_token("w5") == wid(5)
    assert model.to_single_token("<bos>") == 0
    assert model.to_single_str_token(wid(5)) == "w5"
    with pytest.raises(ValueError, match="not a single token.*2 tokens"):
        model.to_single_token("w1 w2")
    with pytest.raises(ValueError, match="not a single token.*0 tokens"):
        model.to_single_token("")
    with pytest.raises(TypeError, match="one int"):
        model.to_single_str_token("w5")
    torch.testing.assert_close(model.tokens_to_residual_directions("w5"), model.W_U[:, wid(5)])


def test_get_token_position(tok):
    model = make_model(tok)
    assert model.get_token_position("w1", "w1 w2 w1") == 1  # after the BOS
    assert model.get_token_position("w1", "w1 w2 w1", mode="last") == 3
    assert model.get_token_position("w1", "w1 w2 w1", prepend_bos=False) == 0
    assert model.get_token_position(wid(2), "w1 w2 w1") == 2
    ids = model.to_tokens("w1 w2 w1")
    assert model.get_token_position(torch.tensor(wid(1)), ids, mode="last") == 3
    assert model.get_token_position("w2", ids[0]) == 2
    with pytest.raises(ValueError, match="does not occur"):
        model.get_token_position("w9", "w1 w2")
    with pytest.raises(ValueError, match="mode"):
        model.get_token_position("w1", "w1", mode="middle")
    with pytest.raises(ValueError, match=r"\[1, pos\]"):
        model.get_token_position("w1", torch.zeros(2, 3, dtype=torch.long))


# ------------------------------------------------------------------ padding masks
def tl3_attention_mask(tokens, pad, bos, prepend_bos, side):
    """TL 3's `utils.get_attention_mask` as its docstring and source describe it, written as a
    loop: only the leading (left) or trailing (right) run of pad ids is padding; with left
    padding, prepend_bos and BOS == pad, the last of the leading run (the BOS) is attended."""
    mask = torch.ones_like(tokens)
    for b, row in enumerate(tokens.tolist()):
        order = range(len(row)) if side == "left" else reversed(range(len(row)))
        run = []
        for i in order:
            if row[i] != pad:
                break
            run.append(i)
        for i in run:
            mask[b, i] = 0
        if side == "left" and prepend_bos and bos == pad and run:
            mask[b, run[-1]] = 1
    return mask


@pytest.mark.parametrize("bos", [0, 5])
def test_padding_mask_is_tl3s_rule(bos):
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 3, (200, 7), generator=g)  # many pad ids (0), at edges and inside
    for side in ("left", "right"):
        for prepend_bos in (True, False):
            ours = padding_mask(tokens, 0, bos, prepend_bos, side)
            assert torch.equal(ours, tl3_attention_mask(tokens, 0, bos, prepend_bos, side))


def test_left_padded_text_gets_exactly_its_padding_as_mask(tok):
    model = make_model(tok)
    texts = ["w1 w2 w3 w4", "w5", "w6 w7"]
    _, tokens, _, mask = model.input_to_embed(texts, padding_side="left")
    assert mask.tolist() == [[1] * 5, [0, 0, 0, 1, 1], [0, 0, 1, 1, 1]]
    assert torch.equal(mask, padding_mask(tokens, 0, 0, True, "left"))  # TL 3's rule agrees
    assert model.input_to_embed(texts)[3] is None  # right padding: no mask, as in TL 3
    _, _, _, mask = model.input_to_embed(texts, prepend_bos=False, padding_side="left")
    assert mask.tolist() == [[1] * 4, [0, 0, 0, 1], [0, 0, 1, 1]]


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"positional_embedding_type": "shortformer", "attn_only": True},
        {"positional_embedding_type": "rotary", "normalization_type": "RMS"},
        {"positional_embedding_type": "alibi"},
        {"positional_embedding_type": "relative", "relative_window": 5},
    ],
    ids=["standard", "shortformer", "rotary", "alibi", "relative"],
)
def test_left_padding_leaves_the_logits_of_real_positions_unchanged(tok, overrides):
    model = make_model(tok, **overrides)
    texts = ["w1 w2 w3 w4 w5 w6 w7", "w8 w9 w8", "w10"]
    left = model(texts, padding_side="left")
    right = model(texts, padding_side="right")
    for b, text in enumerate(texts):
        alone = model(text)[0]
        n = alone.shape[0]
        torch.testing.assert_close(left[b, -n:], alone, atol=1e-5, rtol=0)
        torch.testing.assert_close(right[b, :n], alone, atol=1e-5, rtol=0)


def test_loss_of_left_padded_text_counts_only_real_tokens(tok):
    model = make_model(tok)
    texts = ["w1 w2 w3 w4 w5", "w8 w9"]
    per_token = model(texts, return_type="loss", loss_per_token=True, padding_side="left")
    alone = model(texts[1], return_type="loss", loss_per_token=True)[0]
    torch.testing.assert_close(per_token[1, -2:], alone, atol=1e-5, rtol=0)
    assert per_token[1, :-2].abs().max() == 0


# ------------------------------------------------------------------ text input to the model
def test_text_input_equals_the_ids_path_exactly(tok):
    model = make_model(tok)
    text, texts = "w1 w2 w3 w1 w2", ["w1 w2 w3", "w4 w5 w6 w7 w8"]
    assert torch.equal(model(text), model(model.to_tokens(text)))
    assert torch.equal(model(texts), model(model.to_tokens(texts)))
    assert torch.equal(model(text, prepend_bos=False), model(model.to_tokens(text, False)))
    tokens = model.to_tokens(texts, padding_side="left")
    mask = model.input_to_embed(texts, padding_side="left")[3]
    assert torch.equal(model(texts, padding_side="left"), model(tokens, attention_mask=mask))
    assert torch.equal(
        model(text, return_type="loss"), model(model.to_tokens(text), return_type="loss")
    )
    logits, cache = model.run_with_cache(texts)
    ids_logits, ids_cache = model.run_with_cache(model.to_tokens(texts))
    assert torch.equal(logits, ids_logits)
    assert cache.keys() == ids_cache.keys()
    assert all(torch.equal(cache[k], ids_cache[k]) for k in cache)
    seen = []
    model.run_with_hooks(text, fwd_hooks=[("hook_embed", lambda x, hook: seen.append(x.shape))])
    assert seen == [(1, 6, model.cfg.d_model)]


def test_token_ids_with_a_left_padding_tokenizer_get_tl3s_mask(tok):
    """TL 3 computes the mask for token input too when the tokenizer pads on the left."""
    model = make_model(tok)
    texts = ["w1 w2 w3", "w4"]
    tokens = model.to_tokens(texts, padding_side="left")
    mask = padding_mask(tokens, 0, 0, True, "left")
    masked = model(tokens, attention_mask=mask)
    assert torch.equal(model(tokens, padding_side="left"), masked)
    assert not torch.equal(model(tokens), masked)  # right padding side: no mask (TL 3)
    model.set_tokenizer(tok, default_padding_side="left")
    assert torch.equal(model(tokens), masked)


def test_bad_non_text_lists_still_ask_for_a_tensor(tok):
    with pytest.raises(TypeError, match="torch.Tensor"):
        make_model(tok)([[1, 2]])


# ------------------------------------------------------------------ TransformerLens 4
@pytest.fixture(scope="module")
def bridge_pair(tok_dir):
    """Our model and a TL 4 TransformerBridge with the same weights and tokenizer."""
    model = make_model(AutoTokenizer.from_pretrained(tok_dir))
    bridge = ih.to_bridge(model, tokenizer=AutoTokenizer.from_pretrained(tok_dir))
    return model, bridge


@pytest.mark.parametrize("prepend_bos", [None, True, False])
@pytest.mark.parametrize("side", [None, "left", "right"])
def test_tokenizer_methods_equal_transformerlens_4(bridge_pair, prepend_bos, side):
    model, bridge = bridge_pair
    for text in ("w1 w2 w3", ["w1 w2 w3 w4", "w5", "w6 w7"], ""):
        assert torch.equal(
            model.to_tokens(text, prepend_bos, side), bridge.to_tokens(text, prepend_bos, side)
        )
        assert model.to_str_tokens(text, prepend_bos, side) == bridge.to_str_tokens(
            text, prepend_bos, side
        )
    text = "w1 w2 w1 w3"
    for mode in ("first", "last"):
        assert model.get_token_position("w1", text, mode, prepend_bos) == (
            bridge.get_token_position("w1", text, mode, prepend_bos)
        )
    ids = model.to_tokens(["w1 w2", "w3 w4"])
    assert model.to_string(ids) == bridge.to_string(ids)
    assert model.to_single_token("w9") == bridge.to_single_token("w9")


def test_left_padded_logits_equal_transformerlens_4(bridge_pair):
    model, bridge = bridge_pair
    texts = ["w1 w2 w3 w4 w5", "w6 w7"]
    tokens = model.to_tokens(texts, padding_side="left")
    mask = model.input_to_embed(texts, padding_side="left")[3]
    ours = model(texts, padding_side="left")
    theirs = bridge(tokens, attention_mask=mask)
    real = mask.bool()
    torch.testing.assert_close(ours[real], theirs[real], atol=1e-4, rtol=0)
