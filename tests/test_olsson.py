"""papers/olsson (work in progress, issue 17): the run shipping round trip, per-token losses
with and without pattern-preserving ablation, the ICL score of a loss table and the PCA pivot."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config
from test_bpe_corpus import write_docs

import inducthead as ih
from inducthead.causal import default_data
from inducthead.papers.olsson import analysis, runs
from inducthead.tasks import BPECorpus


def test_pivot_step_is_the_corner_of_an_l_shaped_path():
    xy = np.array([[0, 0], [1, 0], [2, 0], [3, 0], [3, 1], [3, 2], [3, 3]], dtype=float)
    assert analysis.pivot_step(xy, [0, 10, 20, 30, 40, 50, 60]) == 30
    straight = np.array([[0, 0], [1, 1], [2, 2.5], [3, 3]], dtype=float)
    assert analysis.pivot_step(straight, [0, 1, 2, 3]) == 2  # the one point off the chord


def test_icl_of_a_loss_table_reads_the_late_minus_the_early_index():
    losses = torch.arange(256.0).repeat(4, 1)  # loss = position: the score is late - early
    # indices 500 and 50 scaled to 255 and 26, each averaged over 11 positions: 245-255, 21-31
    assert analysis.icl(losses) == pytest.approx(250 - 26)


def test_token_losses_equal_the_model_loss_and_ablation_undoes_induction(demo_model):
    batch = default_data(demo_model, n_samples=8)
    full = analysis.token_losses(demo_model, batch, chunk=3)
    with torch.no_grad():
        logits = demo_model(batch.tokens)
    ref = F.cross_entropy(logits.transpose(1, 2), batch.targets, reduction="none")
    assert torch.allclose(full, ref, atol=1e-5)
    found = ih.detect(demo_model).induction_heads
    assert found
    ablated = analysis.token_losses(demo_model, batch, found)
    repeat = batch.mask  # tokens induction can predict
    assert ablated[repeat].mean() > full[repeat].mean() + 1.0


def test_shipped_run_loads_weights_only_and_the_eval_batch_round_trips(tmp_path):
    task = BPECorpus(
        paths=(str(write_docs(tmp_path / "docs")),),
        seq_len=24,
        vocab_size=300,
        val_every=3,
        cache_dir=str(tmp_path / "cache"),
    )
    cfg = tiny_config(d_vocab=task.d_vocab, bos_token_id=task.bos_token_id, n_ctx=24)
    recipe = ih.TrainConfig(steps=4, checkpoint_steps=(0, 2, 4), progress=False, eval_every=2)
    ih.train(ih.HookedTransformer(cfg), task, recipe, tmp_path / "run")
    steps = runs.ship(tmp_path / "run", tmp_path / "shipped", keep=(0, 2))
    assert steps == [0, 2, 4]  # the last step is always kept
    shipped, original = ih.Run(tmp_path / "shipped"), ih.Run(tmp_path / "run")
    for a, b in zip(shipped.load(4).parameters(), original.load(4).parameters(), strict=True):
        assert torch.equal(a, b)
    size = (tmp_path / "shipped" / "checkpoints" / "step_00000004.safetensors").stat().st_size
    full = (tmp_path / "run" / "checkpoints" / "step_00000004.safetensors").stat().st_size
    assert size < full / 2  # no optimizer state
    runs.write_shared(task, tmp_path / "shipped", n=5)
    batch, ref = runs.eval_batch(tmp_path / "shipped"), task.eval_batch(5, seed=0)
    assert torch.equal(batch.tokens, ref.tokens) and torch.equal(batch.targets, ref.targets)
    assert (tmp_path / "shipped" / "tokenizer.json").is_file()
    with pytest.raises(FileNotFoundError, match="assets/olsson"):
        runs.eval_batch(tmp_path / "nowhere")
