import json

import pytest
import torch
import torch.nn.functional as F
from test_train import TASK, recipe, small_model

import inducthead as ih
from inducthead.runs import RunDirError
from inducthead.training import train_many

SEEDS = (0, 3, 7)


def _rows(path):
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("elapsed_s")
    return rows


def _close(a, b, tol=1e-5):
    """Recursive comparison of metrics rows (numbers to `tol`, everything else exactly)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _close(a[k], b[k], tol)
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _close(x, y, tol)
    elif isinstance(a, float) and not isinstance(b, bool):
        assert b == pytest.approx(a, abs=tol, rel=tol, nan_ok=True)
    else:
        assert a == b


@pytest.mark.slow
def test_train_many_equals_separate_train_calls(tmp_path):
    # grad clipping bites here (per-model norms), with warmup, cosine decay and weight decay
    cfg = recipe(steps=30, grad_clip=0.5, lr=1e-2)
    model_cfg = small_model().cfg
    runs = train_many(model_cfg, TASK, cfg, tmp_path / "many", seeds=SEEDS)
    assert [r.path for r in runs] == [tmp_path / "many" / f"seed_{s}" for s in SEEDS]
    for seed, run in zip(SEEDS, runs, strict=True):
        alone = ih.train(small_model(seed), TASK, cfg.replace(seed=seed), tmp_path / f"one_{seed}")
        # same run.json (apart from creation time and versions), same metrics, same checkpoints
        a = json.loads((tmp_path / f"one_{seed}" / "run.json").read_text())
        b = json.loads((run.path / "run.json").read_text())
        for meta in (a, b):
            meta.pop("created"), meta.pop("versions")
        assert a == b
        _close(_rows(tmp_path / f"one_{seed}"), _rows(run.path))
        assert ih.Run(run.path).checkpoints == alone.checkpoints
        for step in (1, 30):
            mine, theirs = ih.load(run.path, step=step), ih.load(alone.path, step=step)
            for (name, p), q in zip(
                mine.state_dict().items(), theirs.state_dict().values(), strict=True
            ):
                torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-5, msg=name)
        torch.testing.assert_close(run.model.W_Q, alone.model.W_Q, atol=1e-5, rtol=1e-5)
    # the seeds really differ (a broadcasting bug would train K copies of one model)
    assert not torch.allclose(runs[0].model.W_Q, runs[1].model.W_Q)


def test_train_many_checkpoints_resume_with_train(tmp_path):
    """A train_many checkpoint holds train()'s optimizer state: train(resume=True) continues it
    exactly as an uninterrupted train() run."""
    cfg = recipe(steps=12, schedule="constant", checkpoint_steps=(6,))
    train_many(small_model().cfg, TASK, cfg.replace(steps=6), tmp_path / "many", seeds=[2])
    resumed = ih.train(
        small_model(2), TASK, cfg.replace(seed=2), tmp_path / "many" / "seed_2", resume=True
    )
    straight = ih.train(small_model(2), TASK, cfg.replace(seed=2))
    torch.testing.assert_close(resumed.model.W_Q, straight.model.W_Q, atol=1e-5, rtol=1e-5)
    # and train_many resumes its own runs
    runs = train_many(
        small_model().cfg,
        TASK,
        cfg.replace(steps=6),
        tmp_path / "pair",
        seeds=[2, 4],
        overwrite=True,
    )
    runs = train_many(small_model().cfg, TASK, cfg, tmp_path / "pair", resume=True, seeds=[2, 4])
    torch.testing.assert_close(runs[0].model.W_Q, straight.model.W_Q, atol=1e-5, rtol=1e-5)
    assert runs[1].metrics.step.tolist() == straight.metrics.step.tolist()


def test_train_many_refusals(tmp_path):
    cfg = recipe(steps=3)
    with pytest.raises(ValueError, match="distinct seeds"):
        train_many(small_model().cfg, TASK, cfg, seeds=[1, 1])
    train_many(small_model().cfg, TASK, cfg, tmp_path, seeds=[0])
    with pytest.raises(RunDirError, match="already holds a run"):
        train_many(small_model().cfg, TASK, cfg, tmp_path, seeds=[0, 1])
    assert not (tmp_path / "seed_1").exists()  # refused before anything was written
    with pytest.raises(ValueError, match="one distinct directory per seed"):
        train_many(small_model().cfg, TASK, cfg, [tmp_path / "a"], seeds=[0, 1])


@pytest.mark.parametrize("masked", [False, True])
def test_folded_attention_equals_sdpa_under_vmap_and_outside(masked):
    from torch.func import vmap

    from inducthead.model.kernels import folded_sdpa

    g = torch.Generator().manual_seed(0)
    K, B, H, T, D = 3, 2, 2, 5, 4
    q, k, v = (torch.randn(K, B, H, T, D, generator=g, requires_grad=True) for _ in range(3))
    # a per-model additive bias [K, H, T, T] (relative positions), causal -inf above the diagonal
    causal = torch.ones(T, T, dtype=torch.bool).triu(1)
    bias = torch.randn(K, H, T, T, generator=g).masked_fill(causal, float("-inf"))
    bias.requires_grad_()
    kw = {} if masked else {"is_causal": True}

    def folded(q, k, v, m):
        return folded_sdpa(q, k, v, attn_mask=m if masked else None, scale=0.3, **kw)

    def reference(q, k, v, m):
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=m if masked else None, scale=0.3, **kw
        )

    grad = torch.randn(K, B, H, T, D, generator=g)
    inputs = (q, k, v, bias) if masked else (q, k, v)
    for fn in (vmap(folded), folded):  # under vmap (folded), and plain (recomputing backward)
        out = fn(q, k, v, bias[:, None] if fn is folded else bias)
        ref = torch.stack([reference(q[i], k[i], v[i], bias[i]) for i in range(K)])
        torch.testing.assert_close(out, ref)
        for a, b in zip(
            torch.autograd.grad(out, inputs, grad),
            torch.autograd.grad(ref, inputs, grad),
            strict=True,
        ):
            torch.testing.assert_close(a, b)


def test_train_many_with_relative_positions_equals_train():
    """Relative positions add a per-model learned mask to the folded attention call."""
    cfg = small_model().cfg.replace(positional_embedding_type="relative", relative_window=8)
    rec = recipe(steps=5)
    runs = train_many(cfg, TASK, rec, seeds=[0, 1])
    for seed, run in zip((0, 1), runs, strict=True):
        alone = ih.train(ih.HookedTransformer(cfg.replace(seed=seed)), TASK, rec.replace(seed=seed))
        for name, p in alone.model.state_dict().items():
            torch.testing.assert_close(run.model.state_dict()[name], p, atol=1e-5, rtol=1e-5)
        _close(
            run.metrics.drop(columns="elapsed_s").to_dict("records"),
            alone.metrics.drop(columns="elapsed_s").to_dict("records"),
        )


def test_train_many_resumed_at_step_zero_logs_step_zero_once(tmp_path):
    cfg = recipe(steps=4, checkpoint_steps=(0,))
    train_many(small_model().cfg, TASK, cfg.replace(steps=0), tmp_path, seeds=[0, 1])
    runs = train_many(small_model().cfg, TASK, cfg, tmp_path, resume=True, seeds=[0, 1])
    for run in runs:
        assert run.metrics.step.tolist().count(0) == 1
