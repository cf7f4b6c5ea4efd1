"""BPECorpus: a locally trained byte-level BPE over text documents (Olsson et al. 2022's setting
at a CPU scale): the streams and the held-out split, the cache (hit, and a changed file making
a new key), windows, the run directory record, and bad input."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_config

import inducthead as ih
from inducthead.tasks import BPECorpus, from_dict

WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
]


def write_docs(root, n=6):
    root.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        idx = torch.randint(len(WORDS), (400,), generator=g).tolist()
        (root / f"doc{i}.txt").write_text(f"# document {i}\n" + " ".join(WORDS[j] for j in idx))
    return root


def test_streams_split_by_document_and_decode(tmp_path):
    docs = write_docs(tmp_path / "docs")
    task = BPECorpus(
        paths=(str(docs),),
        seq_len=32,
        vocab_size=300,
        val_every=3,
        cache_dir=str(tmp_path / "cache"),
    )
    info = task.describe()
    assert info["n_documents"] == 6
    train, val = task._streams["train"], task._streams["val"]
    sep = task.bos_token_id
    assert task.d_vocab == 301 and sep == 300
    assert int((train == sep).sum()) == 4 and int((val == sep).sum()) == 2  # docs 0, 3 held out
    assert int(train.max()) <= sep and train[0] == sep
    text = task.tokenizer().decode([int(t) for t in val[1:200] if t != sep])
    assert text.startswith("# document 0")
    b = task.sample(5, seed=1)
    assert b.tokens.shape == (5, 32) and torch.equal(b.tokens[:, 1:], b.targets[:, :-1])
    assert torch.equal(task.sample(5, seed=1).tokens, b.tokens)
    assert not torch.equal(task.eval_batch(5, seed=1).tokens, b.tokens)
    assert from_dict(task.to_dict()) == task


def test_cache_hit_and_a_changed_document_makes_a_new_key(tmp_path, monkeypatch):
    docs = write_docs(tmp_path / "docs")
    kw = dict(paths=(str(docs),), seq_len=16, vocab_size=300, cache_dir=str(tmp_path / "c"))
    first = BPECorpus(**kw).describe()
    monkeypatch.setattr(BPECorpus, "_encode", lambda *a: pytest.fail("retrained on a hit"))
    assert BPECorpus(**kw).describe()["fingerprint"] == first["fingerprint"]
    (docs / "doc1.txt").write_text((docs / "doc1.txt").read_text() + " omega")
    monkeypatch.undo()
    changed = BPECorpus(**kw).describe()
    assert changed["fingerprint"] != first["fingerprint"]
    assert len(list((tmp_path / "c").iterdir())) == 2


def test_trains_a_model_and_records_the_corpus_in_run_json(tmp_path):
    task = BPECorpus(
        paths=(str(write_docs(tmp_path / "docs")),),
        seq_len=24,
        vocab_size=300,
        cache_dir=str(tmp_path / "cache"),
    )
    cfg = tiny_config(d_vocab=task.d_vocab, bos_token_id=task.bos_token_id, n_ctx=24)
    run_cfg = ih.TrainConfig(steps=2, n_checkpoints=2, progress=False, eval_every=2)
    ih.train(ih.HookedTransformer(cfg), task, run_cfg, tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["task_info"]["fingerprint"] == task.describe()["fingerprint"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(vocab_size=100), "vocab_size must be an int >= 257"),
        (dict(seq_len=0), "seq_len must be an int >= 1"),
        (dict(val_every=1), "val_every must be an int >= 2"),
        (dict(vocab_size=70000), "<= 65535"),
    ],
)
def test_bad_settings_say_what_to_do(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BPECorpus(**kwargs)


def test_too_few_documents_or_tokens(tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    (one / "a.txt").write_text("alpha beta")
    with pytest.raises(ValueError, match="need at least 2"):
        BPECorpus(paths=(str(one),), cache_dir=str(tmp_path / "c")).describe()
    (one / "b.txt").write_text("gamma delta")
    with pytest.raises(ValueError, match="fewer than one window"):
        BPECorpus(paths=(str(one),), seq_len=512, cache_dir=str(tmp_path / "c")).describe()


@pytest.mark.parametrize(
    "name",
    [
        "olsson-text-1l",
        "olsson-text-2l",
        "olsson-text-3l",
        "olsson-text-smeared-1l",
        "olsson-text-smeared-2l",
    ],
)
def test_olsson_text_presets_fit_their_task(name):
    preset = ih.presets.get(name)
    task = preset.make_task()  # nothing is built until a batch is asked for
    task.check_model(preset.model)
    assert preset.model.bos_token_id == task.bos_token_id == 512
    assert preset.model.smear_keys == ("smeared" in name)
    assert not task._streams


def test_a_hugging_face_dataset_is_streamed_row_by_row(tmp_path, monkeypatch):
    # the real loading code (`datasets.load_dataset(..., streaming=True)`) on a stand-in module:
    # no network here; the rows become documents exactly as files do
    import sys
    import types

    calls = []
    rows = [{"text": f"def f{i}(x):\n    return x + {i}\n" * 40, "id": i} for i in range(12)]

    def load_dataset(path, name=None, split=None, streaming=False):
        calls.append((path, name, split, streaming))
        return iter(rows + [{"text": "never read", "id": 99}] * 1000)

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    task = BPECorpus(
        dataset="my/corpus:small",
        max_documents=12,
        seq_len=16,
        vocab_size=300,
        val_every=4,
        cache_dir=str(tmp_path),
    )
    info = task.describe()
    assert calls == [("my/corpus", "small", "train", True)]
    assert info["n_documents"] == 12 and task.documents() == []
    b = task.sample(4, seed=0)
    assert b.tokens.shape == (4, 16) and int(b.tokens.max()) <= task.bos_token_id
    text = task.tokenizer().decode(task.eval_batch(1).tokens[0].tolist())
    assert "return x" in text
    with pytest.raises(ValueError, match="no field 'content'"):
        BPECorpus(dataset="my/corpus", text_field="content", cache_dir=str(tmp_path)).describe()
    with pytest.raises(ValueError, match="paths or a dataset"):
        BPECorpus(dataset="x", paths=("a",))
    monkeypatch.setitem(sys.modules, "datasets", None)  # not installed
    with pytest.raises(ImportError, match="pip install datasets"):
        BPECorpus(dataset="my/corpus", cache_dir=str(tmp_path / "other")).describe()
