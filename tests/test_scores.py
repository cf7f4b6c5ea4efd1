import pytest
import torch
from conftest import perturbed, tiny_config

import inducthead as ih
from inducthead.analysis import (
    composition_scores,
    copying_score,
    duplicate_token_score,
    empirical_copying_score,
    induction_score,
    prefix_matching_score,
    previous_token_score,
)
from inducthead.analysis.scores import training_scores
from inducthead.model import induction_circuit
from inducthead.tasks.probes import (
    duplicate_targets,
    induction_targets,
    probe_exclusions,
    repeated_probe,
)
from inducthead.testing import word_tokenizer


@pytest.fixture(scope="module")
def circuit():
    return induction_circuit()


def test_induction_and_duplicate_targets_match_their_definitions():
    tokens = torch.tensor([[0, 5, 6, 7, 5, 6, 9, 5]])
    ind, dup = induction_targets(tokens)[0], duplicate_targets(tokens)[0]
    for q in range(8):
        for k in range(8):
            assert bool(ind[q, k]) == (1 <= k <= q and tokens[0, k - 1] == tokens[0, q])
            assert bool(dup[q, k]) == (k < q and tokens[0, k] == tokens[0, q])
    assert ind[4].nonzero().flatten().tolist() == [2] and ind[7].nonzero().flatten().tolist() == [
        2,
        5,
    ]


def test_repeated_probe_structure():
    probe = repeated_probe(50, period=7, repeats=3, n_samples=5, bos_token_id=0, seed=1)
    assert probe.shape == (5, 22) and (probe[:, 0] == 0).all() and (probe[:, 1:] != 0).all()
    for row in probe:
        assert len(set(row[1:8].tolist())) == 7
        assert torch.equal(row[1:8], row[8:15]) and torch.equal(row[1:8], row[15:22])
    partial = repeated_probe(50, period=7, n_samples=2, length=10)
    assert partial.shape == (2, 10) and torch.equal(partial[:, 7:], partial[:, :3])
    excluded = repeated_probe(30, period=10, repeats=2, n_samples=20, exclude=torch.arange(5, 15))
    assert not ((excluded >= 5) & (excluded < 15)).any()
    with pytest.raises(ValueError, match="period 25 needs 25 distinct tokens"):
        repeated_probe(20, period=25)


def test_probe_exclusions_drop_most_and_least_frequent():
    freq = torch.tensor([5.0, 100, 1, 50, 20, 30, 0, 7, 9, 60])
    assert sorted(probe_exclusions(freq, 0.2).tolist()) == sorted([6, 2, 1, 9])


def test_attention_scores_on_the_hand_built_circuit(circuit):
    model, roles = circuit
    pm = prefix_matching_score(model, period=25)
    assert pm[roles.induction] > 0.99 and pm[roles.anti_induction] > 0.99
    assert pm[roles.positional_shortcut] > 0.99  # on its own period it looks like induction...
    assert prefix_matching_score(model, period=17)[roles.positional_shortcut] < 0.05  # ...not here
    assert pm[roles.previous_token] < 0.01 and pm[roles.duplicate_token] < 0.01
    prev = previous_token_score(model)
    assert prev[roles.previous_token] > 0.99 and prev[roles.induction] < 0.05
    dup = duplicate_token_score(model)
    assert dup[roles.duplicate_token] > 0.99 and dup[roles.induction] < 0.01


def test_prefix_matching_of_uniform_attention():
    model = ih.HookedTransformer(
        tiny_config(n_ctx=41, d_vocab=30, attn_only=True, normalization_type=None, bos_token_id=0)
    )
    with torch.no_grad():
        for block in model.blocks:
            block.attn.W_Q.zero_()  # uniform causal attention
    pm = prefix_matching_score(model, period=10, repeats=4)
    # query i (BOS at 0) attends 1/(i+1) to each of its targets
    expected = sum((i - 1) // 10 / (i + 1) for i in range(11, 41)) / 30
    torch.testing.assert_close(pm, torch.full_like(pm, expected), atol=1e-6, rtol=0)


def _copying_model(ov_sign: float = 1.0, rotate: bool = False):
    """One layer, W_E = W_U = I and W_V W_O = ±I (or a 90° rotation) on a 4-token vocabulary."""
    cfg = ih.HookedTransformerConfig(
        n_layers=1,
        d_model=4,
        n_heads=1,
        d_head=4,
        d_vocab=4,
        n_ctx=8,
        attn_only=True,
        normalization_type=None,
        use_bias=False,
        seed=0,  # W_Q, W_K random but fixed: the attention, and so the scores, do not drift
    )
    model = ih.HookedTransformer(cfg)
    with torch.no_grad():
        model.embed.W_E.copy_(torch.eye(4))
        model.unembed.W_U.copy_(torch.eye(4))
        model.blocks[0].attn.W_V[0].copy_(torch.eye(4))
        ov = torch.eye(4) * ov_sign
        if rotate:
            ov = torch.tensor([[0.0, 1, 0, 0], [-1, 0, 0, 0], [0, 0, 0, 1], [0, 0, -1, 0]])
        model.blocks[0].attn.W_O[0].copy_(ov)
    return model


def test_eigenvalue_copying_score():
    assert copying_score(_copying_model(1.0)).item() == pytest.approx(1.0)
    assert copying_score(_copying_model(-1.0)).item() == pytest.approx(-1.0)
    assert copying_score(_copying_model(rotate=True)).item() == pytest.approx(0.0, abs=1e-6)


def test_eigen_copying_equals_the_full_vocabulary_circuit():
    model = perturbed(ih.HookedTransformer(tiny_config(d_model=16, d_head=4, d_vocab=11)))
    ours = copying_score(model)
    for l in range(2):
        for h in range(4):
            full = (model.W_E @ model.W_V[l, h] @ model.W_O[l, h] @ model.W_U).double().detach()
            eig = torch.linalg.eigvals(full)
            expected = eig.sum().real / eig.abs().sum()
            assert ours[l, h].item() == pytest.approx(expected.item(), abs=1e-5)


def test_empirical_copying(circuit):
    model, roles = circuit
    emp = empirical_copying_score(model)
    assert emp[roles.induction] == pytest.approx(1.0)
    assert emp[roles.anti_induction] == pytest.approx(-1.0)
    for zero in roles.zero:
        assert emp[zero] == 0.0  # no output, no preference
    # with diffuse attention the head boosts a mix of tokens: still clearly positive / negative
    plus = empirical_copying_score(_copying_model(1.0), period=3, repeats=2).item()
    minus = empirical_copying_score(_copying_model(-1.0), period=3, repeats=2).item()
    assert plus > 0.3 and minus == pytest.approx(-plus)


def test_copying_ranks_with_sampled_candidates_match_exact_on_small_vocab(circuit):
    model, _ = circuit
    exact = empirical_copying_score(model, max_candidates=4096)
    sampled = empirical_copying_score(model, max_candidates=10)
    torch.testing.assert_close(exact, sampled, atol=0.05, rtol=0)


def test_composition_scores_match_direct_formula():
    model = perturbed(ih.HookedTransformer(tiny_config(n_layers=3)))
    raw = composition_scores(model, "K", baseline=False)
    W_OV = model.W_V @ model.W_O
    W_QK = model.W_Q @ model.W_K.transpose(-1, -2)
    for l1, h1, l2, h2 in [(0, 1, 1, 2), (0, 3, 2, 0), (1, 0, 2, 3)]:
        for kind, right in (("K", W_QK[l2, h2].T), ("Q", W_QK[l2, h2]), ("V", W_OV[l2, h2])):
            left = W_OV[l1, h1]
            expected = (left @ right).norm() / (left.norm() * right.norm())
            got = composition_scores(model, kind, baseline=False)[l1, h1, l2, h2]
            assert got.item() == pytest.approx(expected.item(), rel=1e-4)
    assert torch.isnan(raw[1, 0, 0, 0]) and torch.isnan(raw[1, 0, 1, 2])
    # the baseline is the random-matrix expectation: random heads score about zero after it
    rand = ih.HookedTransformer(tiny_config(n_layers=2, d_model=64, d_head=16, seed=3))
    centred = composition_scores(rand, "K")[0, :, 1]
    assert abs(centred.mean().item()) < 0.05
    with pytest.raises(ValueError, match="'Q', 'K' or 'V'"):
        composition_scores(model, "X")


def test_composition_equals_transformerlens_implementation():
    from transformer_lens import FactoredMatrix
    from transformer_lens.utilities.matrix import composition_scores as tl_composition

    model = perturbed(ih.HookedTransformer(tiny_config(n_layers=3, d_model=24, d_head=6)))
    left = FactoredMatrix(model.W_V, model.W_O)
    rights = {"Q": model.QK, "K": model.QK.T, "V": left}
    for kind, right in rights.items():
        theirs = tl_composition(left, right, broadcast_dims=True).detach()
        ours = composition_scores(model, kind, baseline=False)
        later = ~torch.isnan(ours)
        torch.testing.assert_close(ours[later], theirs[later].float(), atol=1e-5, rtol=1e-4)


def test_arena_convention_equals_arenas_formula(circuit):
    model, _ = circuit
    seq_len = 20
    tokens = repeated_probe(40, seq_len, 2, 6, bos_token_id=0, seed=4)
    ours = induction_score(model, "arena", period=seq_len, tokens=tokens)
    _, cache = model.run_with_cache(tokens)
    for layer in range(2):
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"]
        # ARENA: induction_stripe = pattern.diagonal(offset=1 - seq_len); mean over batch & position
        values = [pattern[:, :, i, i - seq_len + 1] for i in range(seq_len - 1, 2 * seq_len + 1)]
        expected = torch.stack(values, -1).mean((0, 2))
        torch.testing.assert_close(ours[layer], expected, atol=1e-6, rtol=0)
    # two of the stripe's queries have no earlier copy (uniform attention there)
    perfect = (seq_len + 1 / seq_len + 1 / (seq_len + 1)) / (seq_len + 2)
    assert ours[1, 0].item() == pytest.approx(perfect, abs=1e-4)


def test_tl_convention_equals_transformerlens_detect_head(demo_model, tmp_path):
    from transformer_lens.head_detector import detect_head

    bridge = ih.to_bridge(demo_model, tokenizer=word_tokenizer(tmp_path / "tok", 64))
    words = [f"w{i}" for i in range(3, 33)]
    text = " ".join(words + words)
    tokens = bridge.to_tokens(text)  # TL prepends BOS (id 0, the demo model's BOS)
    assert tokens[0, 0] == 0 and tokens.shape[1] == 61
    theirs = detect_head(bridge, text, "induction_head", error_measure="mul")
    ours = induction_score(demo_model, "tl", tokens=tokens)
    torch.testing.assert_close(ours, theirs.float(), atol=1e-4, rtol=0)
    assert 0.4 < ours[1].max() < 0.5  # the 'mul' score tops out near 0.5 for a perfect head
    olsson = induction_score(demo_model, "olsson", tokens=tokens)
    assert olsson[1].max() > 0.9


def test_training_scores_fit_short_contexts():
    model = ih.HookedTransformer(tiny_config(n_ctx=12, d_vocab=8, bos_token_id=0))
    out = training_scores(model)
    assert len(out["prefix_matching"]) == 2 and 0 <= out["best_prefix_matching"] <= 1


def test_arena_convention_uses_arenas_probe_by_default(demo_model):
    """What an ARENA notebook computes: torch.manual_seed(0), then [BOS] + 50 tokens drawn with
    replacement from the vocabulary, twice (`generate_repeated_tokens`), one sequence."""
    from inducthead.analysis.scores import arena_probe

    torch.manual_seed(0)
    half = torch.randint(0, demo_model.cfg.d_vocab, (1, 50))
    notebook = torch.cat([torch.zeros(1, 1, dtype=torch.long), half, half], dim=1)
    assert torch.equal(arena_probe(demo_model), notebook)
    _, cache = demo_model.run_with_cache(notebook)
    expected = torch.stack(
        [cache["pattern", l].diagonal(-49, dim1=-2, dim2=-1).mean((0, 2)) for l in range(2)]
    )
    torch.testing.assert_close(induction_score(demo_model, "arena"), expected)


def _copying_by_loops(z, pattern, tokens, rows, W_O, unembed, lookup, top_keys):
    """`copying_from_cache` written one query row and head at a time (the definition)."""
    total = torch.zeros(W_O.shape[0], dtype=torch.float64)
    for b, q in rows.nonzero().tolist():
        for h in range(W_O.shape[0]):
            direct = z[b, q, h] @ W_O[h] @ unembed  # [C]
            direct = (direct / (1e-5 * direct.abs().max())).round()
            weights, keys = pattern[b, h, q].topk(top_keys)
            for w, k in zip(weights / weights.sum(), keys, strict=True):
                c = int(lookup[tokens[b, k]])
                if c >= 0:
                    stat = (direct[c] - direct).sign().sum() / (len(direct) - 1)
                    total[h] += float(w * stat)
    return total, int(rows.sum())


@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_empirical_copying_statistic_matches_its_definition(chunk, monkeypatch):
    import inducthead.analysis.copying as copying

    g = torch.Generator().manual_seed(0)
    B, Q, H, dh, m, C = 3, 9, 4, 5, 8, 11
    z = torch.randn(B, Q, H, dh, generator=g)
    pattern = torch.softmax(torch.randn(B, H, Q, Q, generator=g), -1)
    tokens = torch.randint(0, 14, (B, Q), generator=g)  # ids 11..13 are not candidates
    rows = torch.rand(B, Q, generator=g) < 0.5
    W_O, unembed = torch.randn(H, dh, m, generator=g), torch.randn(m, C, generator=g)
    lookup = copying.candidate_lookup(torch.arange(C), tokens)
    sign_sums = copying._sign_sums
    monkeypatch.setattr(copying, "_sign_sums", lambda t, d: sign_sums(t, d, chunk))
    got, n = copying.copying_from_cache(z, pattern, tokens, rows, W_O, unembed, lookup, 3)
    want, n_want = _copying_by_loops(z, pattern, tokens, rows, W_O, unembed, lookup, 3)
    assert n == n_want > 0
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=0)
