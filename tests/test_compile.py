"""torch.compile keeps hooks correct (train(compile=...) and compiled_forward).

The tests use the "aot_eager" backend: hooks are a TorchDynamo concern (tracing and guards), which
every backend shares, and it compiles in seconds where inductor takes half a minute on 2 cores.
"""

import pytest
import torch
from test_train import TASK, recipe, small_model

import inducthead as ih
from inducthead.training.speed import compiled_forward

BACKEND = "aot_eager"

pytestmark = pytest.mark.slow  # each test compiles: 3-6 s apiece on 2 cores


def test_hooks_added_or_removed_after_compilation_take_effect():
    model = small_model()
    model.check_inputs = False
    tokens = TASK.sample(4, seed=1).tokens
    forward = compiled_forward(model, BACKEND)
    plain = model(tokens)
    torch.testing.assert_close(forward(tokens), plain)
    fired = []

    def zero_attn(x, hook):
        fired.append(hook.name)
        return torch.zeros_like(x)

    model.add_hook("blocks.0.hook_attn_out", zero_attn)  # after the first compiled call
    with torch.no_grad():
        edited = model(tokens)
    fired.clear()
    assert (edited - plain).abs().max() > 0.1
    torch.testing.assert_close(forward(tokens), edited)
    assert fired == ["blocks.0.hook_attn_out"]
    model.reset_hooks()
    torch.testing.assert_close(forward(tokens), plain)
    cache = {}
    model.add_hook("blocks.1.attn.hook_pattern", lambda x, hook: cache.update(p=x.detach()))
    forward(tokens)  # the pattern hook switches attention to the explicit path, compiled too
    assert cache["p"].shape == (4, 2, 32, 32)
    torch.testing.assert_close(cache["p"].sum(-1), torch.ones(4, 2, 32))
    model.reset_hooks()


def test_compiled_training_with_an_editing_hook_matches_eager():
    # A tensor counter: Python-side effects in a hook (a list, an int) are correct too, but
    # dynamo guards on them and recompiles every step.
    calls = torch.zeros(())

    def halve_head_1(z, hook):  # edits the activation the backward pass flows through
        if torch.is_grad_enabled():
            calls.add_(1)
        z = z.clone()
        z[:, :, 1] = z[:, :, 1] * 0.5
        return z

    hooks = [("blocks.0.attn.hook_z", halve_head_1)]
    cfg = recipe(steps=6, eval_every=3)
    eager = ih.train(small_model(), TASK, cfg, hooks=hooks)
    calls.zero_()
    compiled = ih.train(small_model(), TASK, cfg.replace(compile=BACKEND), hooks=hooks)
    assert calls.item() == 6  # the hook ran in every compiled training step
    unhooked = ih.train(small_model(), TASK, cfg)
    assert not torch.allclose(unhooked.model.W_Q, eager.model.W_Q, atol=1e-4)
    torch.testing.assert_close(compiled.model.W_Q, eager.model.W_Q, atol=1e-5, rtol=1e-5)
    for column in ("train_loss", "eval_loss"):
        a, b = eager.metrics[column].dropna(), compiled.metrics[column].dropna()
        torch.testing.assert_close(
            torch.tensor(b.values), torch.tensor(a.values), atol=1e-5, rtol=0
        )


def test_train_many_compiled_matches_eager():
    from inducthead.training import train_many

    cfg = recipe(steps=3)
    eager = train_many(small_model().cfg, TASK, cfg, seeds=[0, 1])
    compiled = train_many(small_model().cfg, TASK, cfg.replace(compile=BACKEND), seeds=[0, 1])
    for a, b in zip(eager, compiled, strict=True):
        torch.testing.assert_close(b.model.W_Q, a.model.W_Q, atol=1e-5, rtol=1e-5)
