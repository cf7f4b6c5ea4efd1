"""Trainer speed options: pinned CPU threads, fused AdamW, option validation."""

import os

import pytest
import torch
from test_train import TASK, recipe, small_model

import inducthead as ih
from inducthead.training import make_optimizer
from inducthead.training.speed import cpu_threads


def test_cpu_threads_apply_during_training_and_are_restored():
    before = torch.get_num_threads()
    affinity = os.sched_getaffinity(0)
    seen = []

    def probe(x, hook):
        if torch.is_grad_enabled():
            seen.append((torch.get_num_threads(), os.sched_getaffinity(0)))
        return x

    ih.train(small_model(), TASK, recipe(steps=2, cpu_threads=1), hooks=[("hook_embed", probe)])
    assert [n for n, _ in seen] == [1, 1]
    assert all(len(cores) == 1 and cores <= affinity for _, cores in seen)  # pinned to one core
    assert torch.get_num_threads() == before and os.sched_getaffinity(0) == affinity


def test_cpu_threads_give_local_ranks_disjoint_cores():
    """Rank r takes cores [r, r + 1) of the allowed set; a rank beyond the cores there are keeps
    the whole set (one core machines included) rather than failing."""
    cores = sorted(os.sched_getaffinity(0))
    pinned = []
    for rank in range(len(cores) + 1):
        with cpu_threads(1, torch.device("cpu"), local_rank=rank):
            pinned.append(os.sched_getaffinity(0))
    assert pinned == [{c} for c in cores] + [set(cores)]
    assert os.sched_getaffinity(0) == set(cores)


def test_fused_adamw_is_the_same_update_rule():
    cfg = ih.TrainConfig(lr=1e-2, weight_decay=0.1, betas=(0.9, 0.98))
    a, b = small_model(), small_model()
    fused = make_optimizer(a.parameters(), cfg, torch.device("cpu"))
    plain = torch.optim.AdamW(b.parameters(), lr=1e-2, weight_decay=0.1, betas=(0.9, 0.98))
    for step in range(3):
        for model in (a, b):
            tokens = TASK.sample(4, seed=step).tokens
            model(tokens, return_type="loss").backward()
        fused.step(), plain.step()
        fused.zero_grad(), plain.zero_grad()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(cpu_threads=0), "cpu_threads"),
        (dict(compile=""), "compile"),
        (dict(compile=3), "compile"),
    ],
)
def test_speed_option_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ih.TrainConfig(**kwargs)
