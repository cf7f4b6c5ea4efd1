import hashlib
import math

import pytest
import torch

from inducthead import tasks
from inducthead.tasks import Corpus, MarkovICL, RepeatedTokens
from inducthead.tasks.markov import compose_prefix, sample_gamma


def test_repeated_tokens_structure_and_mask():
    task = RepeatedTokens()
    batch = task.sample(64, seed=3)
    assert batch.tokens.shape == batch.targets.shape == batch.mask.shape == (64, 128)
    assert (batch.tokens[:, 0] == 0).all() and (batch.tokens[:, 1:] != 0).all()
    torch.testing.assert_close(batch.tokens[:, 1:], batch.targets[:, :-1])
    for b in range(64):
        p, o = int(batch.info["period"][b]), int(batch.info["offset"][b])
        content = torch.cat([batch.tokens[b, 1:], batch.targets[b, -1:]])
        assert torch.equal(content[o + p :], content[o : len(content) - p])  # repeats from o on
        assert len(set(content[o : o + p].tolist())) == p  # distinct within one period
        # mask = exactly the targets whose previous token already occurred a period earlier
        expected = torch.arange(128) >= o + p + 1
        assert torch.equal(batch.mask[b], expected)
        # every masked target is predictable by induction: previous token + 1 one period back
        for t in torch.nonzero(expected).flatten().tolist()[:5]:
            assert batch.targets[b, t] == batch.targets[b, t - p]


def test_repeated_tokens_period_and_offset_distributions():
    task = RepeatedTokens()
    batch = task.sample(4000, seed=0)
    periods = batch.info["period"]
    seen = set(periods.tolist())
    assert seen == set(task.train_periods) and not seen & {13, 25, 37}
    counts = torch.bincount(periods)[task.train_periods].float()
    assert counts.min() > 0.5 * counts.mean()  # roughly uniform
    # offsets vary and span [0, L - 2p]: no fixed position or distance solves the task
    offsets = batch.info["offset"]
    assert (offsets + 2 * periods <= task.content_len).all()
    assert offsets.min() == 0 and len(set(offsets.tolist())) > 80
    # the first repeated position (o + p) is spread out, so position alone cannot predict it
    starts = (offsets + periods).float()
    assert starts.std() > 15
    held = task.eval_batch(500, seed=0).info["period"]
    assert set(held.tolist()) == {13, 25, 37}


def test_tasks_are_deterministic_in_the_seed():
    for task in (RepeatedTokens(), MarkovICL(), Corpus(max_bytes=200_000)):
        a, b, c = task.sample(8, seed=11), task.sample(8, seed=11), task.sample(8, seed=12)
        assert torch.equal(a.tokens, b.tokens) and torch.equal(a.mask, b.mask)
        assert not torch.equal(a.tokens, c.tokens)


def test_repeated_tokens_without_bos_and_small_vocab():
    task = RepeatedTokens(
        d_vocab=10,
        seq_len=30,
        min_period=2,
        max_period=8,
        held_out_periods=(),
        bos_token_id=None,
        distinct=False,
    )
    batch = task.sample(16, seed=0)
    assert batch.tokens.max() < 10 and batch.tokens.shape == (16, 30)
    for b in range(16):
        p, o = int(batch.info["period"][b]), int(batch.info["offset"][b])
        t = torch.nonzero(batch.mask[b]).flatten()
        assert t.min() + 1 == o + p + 1  # without BOS the target at t is content index t + 1
        assert (batch.targets[b, t] == batch.targets[b, t - p]).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(max_period=80), "max_period"),
        (dict(min_period=1), "min_period"),
        (dict(d_vocab=20), "distinct"),
        (dict(bos_token_id=64), "bos_token_id"),
        (dict(min_period=13, max_period=13, held_out_periods=(13,)), "no period"),
    ],
)
def test_repeated_tokens_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RepeatedTokens(**kwargs)


def test_task_round_trip_through_dict():
    for task in (
        RepeatedTokens(min_period=5),
        MarkovICL(n_states=4, alpha=0.5),
        Corpus(seq_len=64),
    ):
        assert tasks.from_dict(task.to_dict()) == task
    with pytest.raises(ValueError, match="unknown task"):
        tasks.from_dict({"name": "copying"})
    with pytest.raises(ValueError, match="perod"):
        tasks.from_dict({"name": "repeated_tokens", "perod": 3})


def test_task_checks_the_model():
    from conftest import tiny_config

    with pytest.raises(ValueError, match="d_vocab"):
        RepeatedTokens().check_model(tiny_config(n_ctx=128))
    with pytest.raises(ValueError, match="n_ctx"):
        RepeatedTokens().check_model(tiny_config(d_vocab=64))


def test_compose_prefix_equals_sequential_composition():
    g = torch.Generator().manual_seed(0)
    maps = torch.randint(5, (3, 37, 5), generator=g)
    prefix = compose_prefix(maps)
    for b in range(3):
        state = torch.arange(5)
        for t in range(37):
            state = maps[b, t][state]
            assert torch.equal(prefix[b, t], state)


def test_gamma_sampler_moments():
    g = torch.Generator().manual_seed(0)
    for alpha in (0.1, 1.0, 3.0):
        x = sample_gamma(alpha, (200_000,), g, "cpu")
        assert x.mean().item() == pytest.approx(alpha, rel=0.03)
        assert x.var().item() == pytest.approx(alpha, rel=0.08)


def test_markov_chain_follows_its_transition_matrix():
    task = MarkovICL(n_states=3, seq_len=400, alpha=1.0)
    batch = task.sample(4, seed=1)
    P = batch.info["transitions"]
    torch.testing.assert_close(P.sum(-1), torch.ones(4, 3))
    for b in range(4):  # empirical transition frequencies approach the sequence's own matrix
        counts = torch.zeros(3, 3)
        counts.index_put_((batch.tokens[b], batch.targets[b]), torch.ones(400), accumulate=True)
        freq = counts / counts.sum(-1, keepdim=True)
        rows = counts.sum(-1) > 60
        assert (freq[rows] - P[b][rows]).abs().max() < 0.2


def test_markov_bayes_loss_matches_direct_count():
    task = MarkovICL(n_states=3, seq_len=30, alpha=0.5, bos_token_id=3)
    batch = task.sample(2, seed=0)
    loss = task.bayes_loss(batch)
    for b in range(2):
        counts = torch.zeros(3, 3)
        for t in range(1, 30):
            i, j = int(batch.tokens[b, t]), int(batch.targets[b, t])
            p = (counts[i, j] + 0.5) / (counts[i].sum() + 1.5)
            assert loss[b, t].item() == pytest.approx(-math.log(p), abs=1e-5)
            counts[i, j] += 1
    assert not batch.mask[:, 0].any() and batch.tokens[:, 0].eq(3).all()


def test_corpus_defaults_to_the_standard_library(tmp_path):
    task = Corpus(seq_len=32, max_bytes=100_000)
    info = task.describe()
    assert info["n_bytes"] >= 100_000 and len(info["fingerprint"]) == 64
    batch = task.sample(4, seed=0)
    assert batch.tokens.shape == (4, 32) and (batch.tokens[:, 0] == 256).all()
    assert batch.tokens[:, 1:].max() < 256 and task.d_vocab == 257
    assert batch.mask.all()


def test_corpus_reads_user_files_and_globs(tmp_path):
    (tmp_path / "a.txt").write_text("hello world " * 50)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("induction heads " * 50)
    by_dir = Corpus(paths=(str(tmp_path),), seq_len=16)
    by_glob = Corpus(paths=(str(tmp_path / "**" / "*.txt"),), seq_len=16)
    assert by_dir.describe() == by_glob.describe()
    expected = hashlib.sha256()
    for name, text in (("a.txt", "hello world " * 50), ("b.txt", "induction heads " * 50)):
        expected.update(name.encode() + b"\0" + text.encode())
    assert by_dir.describe()["fingerprint"] == expected.hexdigest()
    batch = by_dir.sample(3, seed=0)
    text = bytes(batch.tokens[0, 1:].tolist()).decode()
    assert text in ("hello world " * 50 + "\n" + "induction heads " * 50)
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        Corpus(paths=(str(tmp_path / "nothing_here"),)).describe()
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "t.txt").write_text("ab")
    with pytest.raises(ValueError, match="only 2 bytes"):
        Corpus(paths=(str(tmp_path / "tiny"),)).sample(1)
