"""One training loop for every execution mode: `train_many` honours what `train` honours."""

import inspect

import torch
from test_multiseed import _close, _rows
from test_train import TASK, recipe, small_model

import inducthead as ih
from inducthead.training import train_many


def test_train_and_train_many_take_the_same_arguments_in_the_same_order():
    one = list(inspect.signature(ih.train).parameters)
    many = list(inspect.signature(train_many).parameters)
    assert one[:4] == many[:4] == ["model", "task", "config", "out_dir"]
    assert set(one[4:]) <= set(many[4:]) and "seeds" in many


def _scale_attn_out(x, hook):
    return 0.5 * x  # tensor-only: runs under vmap as on one model


def test_train_many_honours_every_train_config_field_and_hooks(tmp_path, one_cpu_thread):
    """Every TrainConfig field that changes training set away from its default, and a hook that
    changes the forward: train_many equals separate train() calls, rows and weights."""
    cfg = recipe(
        steps=14,
        batch_size=4,
        lr=5e-3,
        betas=(0.8, 0.95),
        weight_decay=0.05,
        warmup_steps=3,
        schedule="cosine",
        min_lr_ratio=0.2,
        grad_clip=0.3,
        eval_every=5,
        eval_batch_size=6,
        checkpoint_steps=(0, 3, 9),
        log_every=2,
        head_scores=False,
        cpu_threads=1,
    )
    hooks = [("blocks.0.hook_attn_out", _scale_attn_out)]
    seeds = (1, 4)
    runs = train_many(small_model().cfg, TASK, cfg, tmp_path / "many", seeds=seeds, hooks=hooks)
    for seed, run in zip(seeds, runs, strict=True):
        alone = ih.train(
            small_model(seed), TASK, cfg.replace(seed=seed), tmp_path / f"one_{seed}", hooks=hooks
        )
        _close(_rows(alone.path), _rows(run.path))
        assert "prefix_matching" not in _rows(run.path)[0]  # head_scores=False honoured
        assert run.checkpoints == alone.checkpoints == [0, 3, 9, 14]
        for name, p in alone.model.state_dict().items():
            torch.testing.assert_close(run.model.state_dict()[name], p, atol=1e-5, rtol=1e-5)
    # the hook really acted: without it the weights differ
    plain = train_many(small_model().cfg, TASK, cfg, seeds=seeds)
    assert not torch.allclose(plain[0].model.W_Q, runs[0].model.W_Q)


def test_train_many_runs_on_the_threads_it_is_given():
    seen = []

    def count_threads(x, hook):
        seen.append(torch.get_num_threads())
        return x

    before = torch.get_num_threads()
    cfg = recipe(steps=2, cpu_threads=1, eval_every=100, head_scores=False)
    train_many(small_model().cfg, TASK, cfg, seeds=[0, 1], hooks=[("hook_embed", count_threads)])
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == before  # restored afterwards
