import json
import os
import signal
import subprocess
import sys

import pytest
import torch

import inducthead as ih
from inducthead.runs import RunDirError
from inducthead.tasks import RepeatedTokens
from inducthead.training import TrainingDiverged

TASK = RepeatedTokens(d_vocab=16, seq_len=32, min_period=3, max_period=10, held_out_periods=(7,))


def small_model(seed=0):
    cfg = ih.HookedTransformerConfig(
        n_layers=2,
        d_model=32,
        n_heads=2,
        d_head=16,
        d_vocab=16,
        n_ctx=32,
        attn_only=True,
        normalization_type=None,
        use_bias=False,
        embed_init_std=1.0,
        bos_token_id=0,
        seed=seed,
    )
    return ih.HookedTransformer(cfg)


def recipe(**changes):
    base = dict(
        steps=40,
        batch_size=8,
        lr=3e-3,
        warmup_steps=5,
        schedule="cosine",
        weight_decay=0.01,
        grad_clip=1.0,
        eval_every=10,
        eval_batch_size=16,
        n_checkpoints=8,
        progress=False,
    )
    base.update(changes)
    return ih.TrainConfig(**base)


def interrupt_at(step_count):
    """A forward hook that sends this process SIGINT during the `step_count`-th training forward."""
    calls = {"n": 0}

    def hook(x, hook):
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == step_count:
                os.kill(os.getpid(), signal.SIGINT)
        return x

    return [("hook_embed", hook)]


@pytest.mark.slow
def test_training_lowers_loss_on_repeated_tokens():
    cfg = recipe(
        steps=200, batch_size=32, lr=2e-2, schedule="constant", warmup_steps=0, grad_clip=None
    )
    run = ih.train(small_model(), TASK, cfg)
    m = run.metrics
    # held-out periods; ln(15) = 2.71 is the loss of guessing among the 15 content tokens
    assert m.eval_loss.iloc[0] > 2.7 and m.eval_loss.iloc[-1] < 1.0
    assert run.model is not None and run.path is None
    assert {"prefix_matching", "previous_token", "best_prefix_matching", "tokens", "lr"} <= set(
        m.columns
    )
    assert len(m.prefix_matching.iloc[0]) == 2 and len(m.prefix_matching.iloc[0][0]) == 2


def test_run_directory_contents(tmp_path):
    run = ih.train(small_model(), TASK, recipe(), tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["status"] == "finished" and meta["final_step"] == 40
    assert meta["model"] == small_model().cfg.to_dict() and meta["task"] == TASK.to_dict()
    assert {"torch", "inducthead", "transformer_lens", "python"} <= set(meta["versions"])
    assert run.checkpoints == recipe().checkpoints() and run.checkpoints[-1] == 40
    rows = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in rows] == sorted({0, 10, 20, 30, 40, *run.checkpoints})
    assert rows[-1]["tokens"] == 40 * 8 * 32
    reopened = ih.Run(tmp_path / "run")
    assert torch.equal(reopened.load().W_Q, run.model.W_Q)
    assert reopened.load(step=0).W_Q.ne(run.model.W_Q).any()
    assert "40" in repr(reopened) and reopened.task == TASK
    assert reopened.train_config == recipe()
    with pytest.raises(RunDirError, match="available"):
        reopened.load(step=39)
    assert not (tmp_path / "run" / ".lock").exists()


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _rows(path):
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("elapsed_s")
    return rows


def test_interrupt_saves_and_resume_is_bitwise_exact(tmp_path):
    straight = ih.train(small_model(), TASK, recipe(), tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        ih.train(small_model(), TASK, recipe(), tmp_path / "cut", hooks=interrupt_at(17))
    cut = ih.Run(tmp_path / "cut")
    assert cut.checkpoints[-1] == 17  # checkpoint written at the step where Ctrl-C arrived
    resumed = ih.train(small_model(), TASK, recipe(), tmp_path / "cut", resume=True)
    a, b = _weights(straight.model), _weights(resumed.model)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert _rows(tmp_path / "straight") == _rows(tmp_path / "cut")


def test_resume_falls_back_to_newest_intact_checkpoint(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        ih.train(small_model(), TASK, recipe(), tmp_path / "run", hooks=interrupt_at(25))
    run = ih.Run(tmp_path / "run")
    newest = run.checkpoint_path(run.checkpoints[-1])
    newest.write_bytes(newest.read_bytes()[:100])  # truncate the newest checkpoint
    assert [s for s, _ in run.damaged] == [run.checkpoints[-1]]
    with pytest.warns(UserWarning, match="skipping damaged checkpoint"):
        resumed = ih.train(small_model(), TASK, recipe(), tmp_path / "run", resume=True)
    straight = ih.train(small_model(), TASK, recipe())
    assert torch.equal(resumed.model.W_Q, straight.model.W_Q)


def test_existing_runs_are_never_clobbered(tmp_path):
    out = tmp_path / "run"
    ih.train(small_model(), TASK, recipe(steps=5), out)
    before = (out / "metrics.jsonl").read_text()
    with pytest.raises(RunDirError, match="already holds a run.*resume=True.*overwrite=True"):
        ih.train(small_model(), TASK, recipe(steps=5), out)
    with pytest.raises(RunDirError, match="model.seed: 0 -> 1"):
        ih.train(small_model(seed=1), TASK, recipe(steps=5), out, resume=True)
    with pytest.raises(RunDirError, match="train.lr"):
        ih.train(small_model(), TASK, recipe(steps=5, lr=0.5), out, resume=True)
    assert (out / "metrics.jsonl").read_text() == before
    run = ih.train(small_model(seed=1), TASK, recipe(steps=5), out, overwrite=True)
    assert run.meta["model"]["seed"] == 1
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep")
    with pytest.raises(RunDirError, match="not empty"):
        ih.train(small_model(), TASK, recipe(steps=5), other)
    assert (other / "mine.txt").read_text() == "keep"


def test_resume_can_extend_training(tmp_path):
    out = tmp_path / "run"
    ih.train(small_model(), TASK, recipe(steps=20, schedule="constant"), out)
    run = ih.train(small_model(), TASK, recipe(steps=30, schedule="constant"), out, resume=True)
    assert run.metrics.step.iloc[-1] == 30


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    count = {"n": 0}

    def poison(x, hook):
        if torch.is_grad_enabled():
            count["n"] += 1
            if count["n"] >= 23:
                return x * float("nan")
        return x

    with pytest.raises(TrainingDiverged, match="loss became nan.*last good checkpoint"):
        ih.train(small_model(), TASK, recipe(), tmp_path / "run", hooks=[("hook_embed", poison)])
    run = ih.Run(tmp_path / "run")
    assert run.checkpoints[-1] < 23 and not run.damaged
    assert all(torch.isfinite(p).all() for p in run.load().parameters())


def test_lock_refuses_a_second_trainer_and_takes_over_stale_locks(tmp_path):
    out = tmp_path / "run"
    ih.train(small_model(), TASK, recipe(steps=2), out)
    import socket

    (out / ".lock").write_text(f"{os.getppid()}@{socket.gethostname()}")  # a live process
    with pytest.raises(RunDirError, match="locked by process"):
        ih.train(small_model(), TASK, recipe(steps=4), out, resume=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / ".lock").write_text(f"{dead.pid}@{socket.gethostname()}")
    run = ih.train(small_model(), TASK, recipe(steps=4), out, resume=True)
    assert run.metrics.step.iloc[-1] == 4 and not (out / ".lock").exists()


def test_hooks_are_active_during_training():
    seen = {"n": 0}

    def count(x, hook):
        seen["n"] += int(torch.is_grad_enabled())

    ih.train(small_model(), TASK, recipe(steps=6), hooks=[("blocks.1.attn.hook_pattern", count)])
    assert seen["n"] == 6


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(lr=-1.0), "lr"),
        (dict(schedule="linear"), "schedule"),
        (dict(betas=(0.9, 1.5)), "betas"),
        (dict(batch_size=0), "batch_size"),
        (dict(device="tpu"), "device"),
        (dict(checkpoint_steps=(5, 99), steps=10), "checkpoint_steps"),
    ],
)
def test_train_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ih.TrainConfig(**kwargs)


def test_lr_schedule():
    cfg = ih.TrainConfig(steps=100, lr=1.0, warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    assert cfg.lr_at(0) == pytest.approx(0.1) and cfg.lr_at(9) == pytest.approx(1.0)
    assert cfg.lr_at(10) == pytest.approx(1.0) and cfg.lr_at(99) == pytest.approx(0.1, abs=1e-3)
    assert ih.TrainConfig(lr=0.5).lr_at(500) == 0.5


def test_task_model_mismatch_is_reported():
    with pytest.raises(ValueError, match="d_vocab"):
        ih.train(
            small_model(),
            RepeatedTokens(d_vocab=64, seq_len=32, max_period=16, held_out_periods=()),
            recipe(steps=1),
        )


@pytest.mark.slow
def test_training_is_bitwise_reproducible_with_several_threads():
    """Two identical runs give identical weights with 2 CPU threads: no backward op may
    accumulate in a thread-dependent order (W_E[tokens]'s did; the embedding lookup does not)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        preset = ih.configs.get("demo")
        cfg = preset.train.replace(steps=30, progress=False, device="cpu", eval_every=30)
        runs = [
            ih.train(ih.HookedTransformer(preset.model), preset.make_task(), cfg) for _ in range(2)
        ]
    finally:
        torch.set_num_threads(threads)
    for (name, a), b in zip(
        runs[0].model.state_dict().items(), runs[1].model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def _checkpoint_tensors(path, step):
    from inducthead.runs import checkpoint as ckpt

    return ckpt.read_checkpoint(ih.Run(path).checkpoint_path(step))[0]


def test_a_resumed_run_equals_the_straight_run_at_every_checkpoint(tmp_path):
    """Cosine schedule, interrupted mid-run, in a process whose global RNG differs: every
    checkpoint after the resume (weights, AdamW moments, RNG state) and every metrics row equal
    the straight run's."""
    torch.manual_seed(1)
    straight = ih.train(small_model(), TASK, recipe(), tmp_path / "straight")
    torch.manual_seed(2)
    with pytest.raises(KeyboardInterrupt):
        ih.train(small_model(), TASK, recipe(), tmp_path / "cut", hooks=interrupt_at(13))
    meta = json.loads((tmp_path / "cut" / "run.json").read_text())
    assert meta["status"] == "interrupted" and meta["saved_step"] == 13
    assert "interrupted, step 13" in repr(ih.Run(tmp_path / "cut"))
    torch.manual_seed(3)
    ih.train(small_model(), TASK, recipe(), tmp_path / "cut", resume=True)
    assert json.loads((tmp_path / "cut" / "run.json").read_text())["status"] == "finished"
    later = [s for s in straight.checkpoints if s >= 13]
    assert ih.Run(tmp_path / "cut").checkpoints[-len(later) :] == later
    for step in later:
        a = _checkpoint_tensors(tmp_path / "straight", step)
        b = _checkpoint_tensors(tmp_path / "cut", step)
        assert a.keys() == b.keys()
        for name in a:
            assert torch.equal(a[name], b[name]), (step, name)
    assert _rows(tmp_path / "straight") == _rows(tmp_path / "cut")


def test_resuming_with_other_steps_is_exact_or_refused(tmp_path):
    constant = recipe(steps=20, schedule="constant", warmup_steps=5)
    ih.train(small_model(), TASK, constant.replace(steps=10), tmp_path / "const")
    extended = ih.train(small_model(), TASK, constant, tmp_path / "const", resume=True)
    straight = ih.train(small_model(), TASK, constant, tmp_path / "const_straight")
    for name, p in straight.model.state_dict().items():
        assert torch.equal(extended.model.state_dict()[name], p), name
    a, b = _checkpoint_tensors(tmp_path / "const", 20), _checkpoint_tensors(straight.path, 20)
    assert all(torch.equal(a[k], b[k]) for k in a)  # RNG state included
    # cosine: the 10 steps trained used other learning rates than a 20-step run would
    cosine = recipe(steps=20)
    ih.train(small_model(), TASK, cosine.replace(steps=10), tmp_path / "cos")
    with pytest.raises(RunDirError, match="cannot resume with steps 10 -> 20.*schedule='cosine'"):
        ih.train(small_model(), TASK, cosine, tmp_path / "cos", resume=True)
    forced = ih.train(
        small_model(), TASK, cosine, tmp_path / "cos", resume=True, allow_schedule_change=True
    )
    assert forced.meta["schedule_changes"] == [{"at_step": 10, "steps": [10, 20]}]
    with pytest.raises(RunDirError, match="already trained 20 steps"):
        ih.train(small_model(), TASK, cosine.replace(steps=15), tmp_path / "cos", resume=True)


def test_the_newest_checkpoint_damaged_is_said_and_recorded(tmp_path, demo_model):
    ih.train(small_model(), TASK, recipe(steps=12), tmp_path / "run")
    run = ih.Run(tmp_path / "run")
    newest = run.checkpoint_path(12)
    newest.write_bytes(newest.read_bytes()[:200])
    with pytest.warns(UserWarning, match=f"skipping damaged checkpoint.*{newest.name}"):
        model = ih.load(tmp_path / "run")
    older = run.checkpoints[-2]
    assert model.loaded_from == {"path": str(run.checkpoint_path(older)), "step": older}
    data = ih.causal.default_data(model, n_samples=16)
    for result in (
        ih.detect(model, period=10, repeats=3),
        ih.ablation_scan(model, data),
        ih.patch_heads(model, data, heads=[(1, 0)]),
        ih.verify(model, heads=[(1, 0)], data=data, period=10, repeats=3),
    ):
        assert result.source["step"] == older and f"at step {older}" in repr(result)
        assert json.loads(result.to_json())["source"]["step"] == older


def test_resume_refuses_a_corpus_whose_files_changed(tmp_path):
    from inducthead.tasks import Corpus

    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    task = Corpus(paths=(str(text),), seq_len=16)
    cfg = ih.HookedTransformerConfig(
        n_layers=1, d_model=16, n_heads=2, d_head=8, d_vocab=257, n_ctx=16, seed=0
    )
    rec = recipe(steps=6, batch_size=4, head_scores=False)
    ih.train(ih.HookedTransformer(cfg), task, rec.replace(steps=3), tmp_path / "run")
    text.write_text("a different text entirely, of another length. " * 40)
    with pytest.raises(RunDirError, match="task data fingerprint"):
        ih.train(
            ih.HookedTransformer(cfg),
            Corpus(paths=(str(text),), seq_len=16),
            rec,
            tmp_path / "run",
            resume=True,
            allow_schedule_change=True,
        )


def test_shortened_recipe_keeps_the_checkpoints_inside():
    cfg = ih.TrainConfig(steps=300, checkpoint_steps=(0, 50, 100, 250, 300))
    short = cfg.shortened(120)
    assert short.steps == 120 and short.checkpoint_steps == (0, 50, 100, 120)
    assert short.lr == cfg.lr and short.betas == cfg.betas
    logspaced = ih.TrainConfig(steps=300, n_checkpoints=10).shortened(40)
    assert logspaced.steps == 40 and logspaced.checkpoint_steps is None
