"""`HookedTransformer.generate` (`inducthead.model.generate`): known answers on the hand-built
induction circuit, equality with a manual argmax loop, TransformerLens's sampling and a TL 4
TransformerBridge's `generate`."""

from __future__ import annotations

import pytest
import torch
from conftest import perturbed, tiny_config
from transformers import AutoTokenizer

import inducthead as ih
from inducthead.model import induction_circuit
from inducthead.model.generate import sample_logits
from inducthead.testing import word_tokenizer

V = 40  # "<bos>" (0: BOS, EOS and pad), "<unk>" (1), "w0" (2) ... "w37" (39)
QUIET = dict(verbose=False)


def wid(i: int) -> int:
    return i + 2


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok")
    word_tokenizer(path, V)
    return path


@pytest.fixture
def circuit(tok_dir):
    """The hand-built induction model: on a repeated sequence its next token is the repeat's."""
    model, _ = induction_circuit(d_vocab=V, n_ctx=40)
    model.set_tokenizer(AutoTokenizer.from_pretrained(tok_dir))
    return model


@pytest.fixture
def random_model(tok_dir):
    model = perturbed(ih.HookedTransformer(tiny_config(d_vocab=V, n_ctx=32)), scale=0.5).eval()
    model.set_tokenizer(AutoTokenizer.from_pretrained(tok_dir))
    return model


def words(*ids: int) -> str:
    return " ".join(f"w{i}" for i in ids)


# ------------------------------------------------------------------ greedy
def test_greedy_generation_continues_the_repeat(circuit):
    out = circuit.generate(words(1, 2, 3, 4, 5, 1, 2), 8, do_sample=False, **QUIET)
    assert out == words(1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2, 3, 4, 5)
    tokens = circuit.generate(words(7, 8, 9, 7), 5, do_sample=False, return_type="tokens", **QUIET)
    assert tokens.tolist() == [[0] + [wid(i) for i in (7, 8, 9, 7, 8, 9, 7, 8, 9)]]


def manual_greedy(model, tokens, n):
    for _ in range(n):
        tokens = torch.cat([tokens, model(tokens)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return tokens


def test_greedy_equals_a_manual_argmax_loop(random_model):
    model = random_model
    model.tokenizer = None  # ids in, ids out, no tokenizer
    tokens = torch.randint(2, V, (3, 5), generator=torch.Generator().manual_seed(0))
    out = model.generate(tokens, 12, do_sample=False, stop_at_eos=False, **QUIET)
    assert torch.equal(out, manual_greedy(model, tokens, 12))
    assert torch.equal(model.generate(tokens, 12, top_k=1, stop_at_eos=False, **QUIET), out)
    assert torch.equal(model.generate(tokens, 12, temperature=0.0, stop_at_eos=False, **QUIET), out)
    one = model.generate(tokens[0], 4, do_sample=False, stop_at_eos=False, **QUIET)
    assert torch.equal(one, out[0, :9])  # [pos] in, [pos] out


def test_batched_text_is_left_padded_and_matches_each_prompt_alone(random_model):
    prompts = [words(1, 2, 3, 4, 5, 6), words(7), words(8, 9, 10)]
    batched = random_model.generate(prompts, 6, do_sample=False, stop_at_eos=False, **QUIET)
    alone = [
        random_model.generate(p, 6, do_sample=False, stop_at_eos=False, **QUIET) for p in prompts
    ]
    assert batched == alone
    tokens = random_model.generate(
        prompts, 6, do_sample=False, stop_at_eos=False, return_type="tokens", **QUIET
    )
    assert tokens[1, :5].tolist() == [0] * 5  # 5 pads (the pad id is BOS) before "<bos> w7"


def test_left_padded_ids_with_an_attention_mask(random_model):
    model = random_model
    model.tokenizer = None
    rows = [[0, 3, 4, 5, 6], [0, 7, 8]]
    tokens = torch.tensor([rows[0], [0, 0, *rows[1]]])
    mask = torch.tensor([[1] * 5, [0, 0, 1, 1, 1]])
    out = model.generate(
        tokens, 5, do_sample=False, stop_at_eos=False, attention_mask=mask, **QUIET
    )
    for b, row in enumerate(rows):
        alone = model.generate(torch.tensor([row]), 5, do_sample=False, stop_at_eos=False, **QUIET)
        assert out[b, -5:].tolist() == alone[0, -5:].tolist()
    with pytest.raises(ValueError, match="left padding"):
        model.generate(tokens, 2, stop_at_eos=False, attention_mask=mask.flip(-1), **QUIET)


# ------------------------------------------------------------------ sampling
def test_sample_logits_equals_transformerlens_draw_for_draw():
    from transformer_lens.utilities.logits_utils import sample_logits as tl_sample_logits

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, V, generator=g) * 3
    tokens = torch.randint(0, V, (64, 9), generator=g)
    options = [
        {},
        {"temperature": 0.5},
        {"temperature": 0.0},
        {"top_k": 3},
        {"top_k": 500},
        {"top_p": 0.6},
        {"top_k": 2, "top_p": 0.1},
        {"temperature": 2.0, "freq_penalty": 1.5},
    ]
    for kwargs in options:
        torch.manual_seed(1)
        ours = sample_logits(logits, tokens=tokens, **kwargs)
        torch.manual_seed(1)
        theirs = tl_sample_logits(logits, tokens=tokens, **kwargs)
        assert torch.equal(ours, theirs), kwargs


def test_top_k_top_p_and_frequency_penalty_keep_the_right_tokens():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().expand(4000, 4)
    torch.manual_seed(0)
    for kwargs, allowed in [
        ({"top_k": 2}, {0, 1}),
        ({"top_p": 0.7}, {0, 1}),  # 0.5 < 0.7: the token that crosses 0.7 is kept too
        ({"top_p": 0.9}, {0, 1, 2}),
        ({"top_p": 0.4}, {0}),
        ({}, {0, 1, 2, 3}),
    ]:
        assert set(sample_logits(logits, **kwargs).tolist()) == allowed, kwargs
    share = (sample_logits(logits, top_p=0.7) == 0).float().mean()
    assert share == pytest.approx(0.5 / 0.8, abs=0.03)
    flat, seen = torch.zeros(2000, 3), torch.tensor([[0, 0, 1]]).expand(2000, 3)
    assert set(sample_logits(flat, freq_penalty=100.0, tokens=seen).tolist()) == {2}
    mask = torch.tensor([[0, 0, 1]]).expand(2000, 3)  # padding is not counted
    assert set(sample_logits(flat, freq_penalty=100.0, tokens=seen, mask=mask).tolist()) == {0, 2}


def test_low_temperature_and_tiny_top_p_are_greedy(circuit):
    prompt = words(1, 2, 3, 4, 5, 1)
    greedy = circuit.generate(prompt, 10, do_sample=False, **QUIET)
    torch.manual_seed(0)
    assert circuit.generate(prompt, 10, temperature=1e-3, **QUIET) == greedy
    assert circuit.generate(prompt, 10, top_p=1e-6, temperature=50.0, **QUIET) == greedy
    assert circuit.generate(prompt, 10, top_k=1, temperature=50.0, **QUIET) == greedy
    assert circuit.generate(prompt, 10, temperature=50.0, **QUIET) != greedy


def test_sampling_is_reproducible_under_a_seed(random_model):
    runs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        runs.append(random_model.generate(words(1, 2), 15, stop_at_eos=False, **QUIET))
    assert runs[0] == runs[1] != runs[2]


# ------------------------------------------------------------------ EOS
def test_stop_at_eos_finishes_rows_one_by_one(circuit):
    """Row 0 repeats into its BOS (= EOS), then keeps emitting EOS; row 1 never meets one."""
    prompts = ["w1 w2 w3 <bos> w1 w2", words(5, 6, 7, 5, 6)]
    out = circuit.generate(prompts, 6, do_sample=False, return_type="tokens", **QUIET)
    assert out[0, -6:].tolist() == [wid(3), 0, 0, 0, 0, 0]
    assert out[1, -6:].tolist() == [wid(i) for i in (7, 5, 6, 7, 5, 6)]
    free = circuit.generate(prompts, 6, False, do_sample=False, return_type="tokens", **QUIET)
    assert free[0, -6:].tolist() == [wid(3), 0, wid(1), wid(2), wid(3), 0]
    ended = circuit.generate("w1 w2 w3 <bos> w1 w2 w3", 6, do_sample=False, **QUIET)
    assert ended == "w1 w2 w3 w1 w2 w3"  # stopped after one token, EOS not shown
    ids = circuit.to_tokens(prompts[1])
    stopped = circuit.generate(ids, 6, eos_token_id=[wid(9), wid(5)], do_sample=False, **QUIET)
    assert stopped[0, -2:].tolist() == [wid(7), wid(5)]  # any id of the list stops


def test_ids_without_a_tokenizer(circuit):
    model = circuit
    ids = model.to_tokens(words(1, 2, 3, 1))
    model.tokenizer = None
    with pytest.raises(ValueError, match="eos_token_id"):
        model.generate(ids, 3, **QUIET)  # stop_at_eos needs an EOS id, as in TL 3
    out = model.generate(ids, 3, eos_token_id=0, do_sample=False, **QUIET)
    assert out.tolist() == [[0] + [wid(i) for i in (1, 2, 3, 1, 2, 3, 1)]]
    with pytest.raises(RuntimeError, match="set_tokenizer"):
        model.generate(ids, 3, stop_at_eos=False, return_type="str", **QUIET)
    with pytest.raises(TypeError, match="set_tokenizer"):
        model.generate("w1 w2", 3, stop_at_eos=False, **QUIET)


def test_return_types(circuit):
    prompt = words(1, 2, 1)
    kw = dict(do_sample=False, **QUIET)
    assert circuit.generate(prompt, 2, **kw) == words(1, 2, 1, 2, 1)
    assert circuit.generate([prompt], 2, **kw) == words(1, 2, 1, 2, 1)  # one row: str (TL 3)
    assert circuit.generate([prompt, prompt], 2, **kw) == [words(1, 2, 1, 2, 1)] * 2
    ids = circuit.generate(prompt, 2, return_type="tokens", **kw)
    assert ids.tolist() == [[0] + [wid(i) for i in (1, 2, 1, 2, 1)]]
    assert circuit.generate(circuit.to_tokens(prompt), 2, return_type="str", **kw) == (
        words(1, 2, 1, 2, 1)
    )
    assert circuit.generate(prompt, 0, **kw) == prompt
    assert circuit.generate(prompt, 2, prepend_bos=False, return_type="tokens", **kw).shape == (
        1,
        5,
    )


# ------------------------------------------------------------------ limits and state
def test_generation_never_reads_past_n_ctx(circuit):
    prompt = words(*range(29))  # 30 tokens with BOS; n_ctx 40
    with pytest.raises(ValueError, match=r"read 41 tokens, above its n_ctx=40.*at most 11"):
        circuit.generate(prompt, 12, **QUIET)
    lengths = []
    with circuit.hooks(fwd_hooks=[("hook_embed", lambda x, hook: lengths.append(x.shape[1]))]):
        out = circuit.generate(prompt, 11, stop_at_eos=False, return_type="tokens", **QUIET)
    assert out.shape == (1, 41) and lengths == list(range(30, 41))


def test_training_flags_are_restored_and_nothing_is_recorded_for_autograd(random_model):
    model = random_model.train()
    model.blocks[0].eval()  # a mixed state survives too
    seen = []
    with model.hooks(fwd_hooks=[("hook_embed", lambda x, hook: seen.append(model.training))]):
        out = model.generate(words(1, 2), 3, return_type="tokens", stop_at_eos=False, **QUIET)
    assert seen == [False] * 3 and out.is_inference() and not out.requires_grad
    assert model.training and not model.blocks[0].training and model.blocks[1].training

    def boom(x, hook):
        raise RuntimeError("hook failed")

    with model.hooks(fwd_hooks=[("hook_embed", boom)]), pytest.raises(RuntimeError, match="hook"):
        model.generate(words(1, 2), 3, stop_at_eos=False, **QUIET)
    assert model.training and not model.blocks[0].training
    model.eval()
    model.generate(words(1, 2), 2, stop_at_eos=False, **QUIET)
    assert not model.training


def test_hooks_apply_at_every_step(circuit):
    prompt = words(1, 2, 3, 4, 1)

    def ablate_induction(z, hook):
        z[:, :, 0] = 0.0  # L1H0's output
        return z

    with circuit.hooks(fwd_hooks=[("blocks.1.attn.hook_z", ablate_induction)]):
        ablated = circuit.generate(prompt, 4, do_sample=False, stop_at_eos=False, **QUIET)
    assert circuit.generate(prompt, 4, do_sample=False, **QUIET) == words(1, 2, 3, 4, 1, 2, 3, 4, 1)
    assert not ablated.startswith(words(1, 2, 3, 4, 1, 2))  # anti-induction now wins


def test_progress_bar_behind_verbose(random_model, capsys):
    random_model.generate(words(1), 3, stop_at_eos=False, verbose=True)
    assert "3/3" in capsys.readouterr().err
    random_model.generate(words(1), 3, stop_at_eos=False, verbose=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_new_tokens": -1}, "max_new_tokens"),
        ({"top_k": 0}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"temperature": -1.0}, "temperature"),
        ({"freq_penalty": -0.5}, "freq_penalty"),
        ({"return_type": "embeds"}, "embeddings are not supported"),
        ({"input": torch.zeros(1, 3, 32)}, "embeddings are not supported"),
        ({"input": 3}, "torch.Tensor"),
        ({"input": torch.tensor([[1, 2]]), "eos_token_id": []}, "empty"),
    ],
)
def test_bad_arguments_are_named(random_model, kwargs, match):
    kwargs = {"input": "w1", **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        random_model.generate(**kwargs, verbose=False)


# ------------------------------------------------------------------ TransformerLens 4
@pytest.mark.parametrize("model_name", ["circuit", "random_model"])
def test_generate_equals_transformerlens_4(request, tok_dir, model_name):
    model = request.getfixturevalue(model_name)
    bridge = ih.to_bridge(model, tokenizer=AutoTokenizer.from_pretrained(tok_dir))
    prompts = [words(1, 2, 3, 4, 1, 2), words(5, 6, 5)]
    for kwargs in [
        {"do_sample": False},
        {"do_sample": False, "prepend_bos": False},
        {"temperature": 3.0, "top_k": 5},
        {"temperature": 2.0, "top_p": 0.8},
        {"temperature": 1.5, "freq_penalty": 2.0},
    ]:
        for prompt in (prompts[0], prompts):
            outs = []
            for m in (model, bridge):
                torch.manual_seed(0)
                outs.append(m.generate(prompt, 6, return_type="tokens", verbose=False, **kwargs))
            if prompt is prompts and kwargs.get("prepend_bos") is False:
                continue  # TL 4 differs here (next test)
            assert torch.equal(outs[0], outs[1].to(outs[0].device)), (kwargs, prompt)


def test_batched_prompts_without_bos_match_each_prompt_alone(circuit, tok_dir):
    """TL 4.3's bridge masks a left-padded batch as if a BOS had been prepended (the pad id is
    the BOS id), so a row without BOS gets one: its continuation changes with batching. TL 3
    (get_attention_mask with prepend_bos=False) and we mask the pads only."""
    bridge = ih.to_bridge(circuit, tokenizer=AutoTokenizer.from_pretrained(tok_dir))
    prompts = [words(1, 2, 3, 4, 1, 2), words(5, 6, 5)]
    kw = dict(do_sample=False, prepend_bos=False, return_type="tokens", verbose=False)
    alone = circuit.generate(prompts[1], 4, **kw)
    assert torch.equal(bridge.generate(prompts[1], 4, **kw), alone)
    assert torch.equal(circuit.generate(prompts, 4, **kw)[1, 3:], alone[0])
    theirs = bridge.generate(prompts, 4, **kw)[1, 3:]
    with_bos = circuit.generate(prompts[1], 4, **{**kw, "prepend_bos": True})[0, 1:]
    assert torch.equal(theirs, with_bos) and not torch.equal(theirs, alone[0])
