"""Smeared keys (Olsson et al. 2022, Argument 2; `cfg.smear_keys`): the formula with hand-set
gates, the first (and first real) token unchanged, both attention paths, gradients, a training
run's checkpoint round trip, and the clear refusals."""

from __future__ import annotations

import pytest
import torch
from conftest import perturbed, tiny_config

import inducthead as ih
from inducthead.tasks import RepeatedTokens


def smeared_model(**overrides):
    model = perturbed(ih.HookedTransformer(tiny_config(smear_keys=True, **overrides)))
    with torch.no_grad():
        for layer, block in enumerate(model.blocks):
            block.attn.smear_logit.copy_(torch.tensor([0.3, -1.2, 2.0, 0.0]) * (layer + 1))
    return model


def test_smeared_key_is_the_formula_with_hand_set_gates():
    model = smeared_model(positional_embedding_type="standard").double()
    tokens = torch.randint(23, (3, 24), generator=torch.Generator().manual_seed(0))
    _, cache = model.run_with_cache(tokens)
    for layer, block in enumerate(model.blocks):
        k = cache[f"blocks.{layer}.attn.hook_k"]
        g = torch.sigmoid(block.attn.smear_logit)[None, None, :, None]
        expected = g * k[:, 1:] + (1 - g) * k[:, :-1]
        got = cache[f"blocks.{layer}.attn.hook_k_smeared"]
        torch.testing.assert_close(got[:, 1:], expected, atol=1e-12, rtol=0)
        torch.testing.assert_close(got[:, 0], k[:, 0], atol=0, rtol=0)  # no predecessor
        q = cache[f"blocks.{layer}.attn.hook_q"]
        scores = torch.einsum("bqhd,bkhd->bhqk", q, got) / model.cfg.attn_scale
        tril = torch.ones(24, 24, dtype=torch.bool).tril()
        torch.testing.assert_close(
            cache[f"blocks.{layer}.attn.hook_attn_scores"][..., tril], scores[..., tril]
        )


def test_gates_start_at_one_half_and_learn():
    model = ih.HookedTransformer(tiny_config(smear_keys=True))
    assert all(torch.equal(b.attn.smear_logit, torch.zeros(4)) for b in model.blocks)
    tokens = torch.randint(23, (2, 24), generator=torch.Generator().manual_seed(1))
    model(tokens, return_type="loss").backward()
    assert all(b.attn.smear_logit.grad.abs().sum() > 0 for b in model.blocks)


def test_fast_and_explicit_paths_agree_and_left_padding_keeps_the_first_real_key():
    model = smeared_model().double()
    tokens = torch.randint(23, (3, 24), generator=torch.Generator().manual_seed(2))
    with model.fast_attention():
        fast = model(tokens)
    slow, cache = model.run_with_cache(tokens)
    torch.testing.assert_close(fast, slow, atol=1e-10, rtol=1e-10)
    mask = torch.ones(3, 24, dtype=torch.long)
    mask[0, :5] = 0  # row 0 left-padded: its first real token is at 5
    _, padded = model.run_with_cache(tokens, attention_mask=mask)
    k, ks = padded["blocks.0.attn.hook_k"], padded["blocks.0.attn.hook_k_smeared"]
    torch.testing.assert_close(ks[0, 5], k[0, 5], atol=0, rtol=0)
    g = torch.sigmoid(model.blocks[0].attn.smear_logit)[:, None]
    torch.testing.assert_close(ks[0, 6], g * k[0, 6] + (1 - g) * k[0, 5])


def test_a_smeared_run_round_trips_through_its_checkpoint(tmp_path):
    task = RepeatedTokens(d_vocab=23, seq_len=24, min_period=3, max_period=8, held_out_periods=())
    model = ih.HookedTransformer(tiny_config(smear_keys=True, bos_token_id=0))
    cfg = ih.TrainConfig(steps=3, n_checkpoints=2, progress=False, eval_every=3, lr=1e-2)
    ih.train(model, task, cfg, tmp_path / "run")
    back = ih.load(tmp_path / "run")
    assert back.cfg.smear_keys
    assert all(
        torch.equal(a.attn.smear_logit, b.attn.smear_logit)
        for a, b in zip(model.blocks, back.blocks, strict=True)
    )
    assert not torch.equal(back.blocks[0].attn.smear_logit, torch.zeros(4))  # trained
    assert ih.HookedTransformerConfig.from_dict(back.cfg.to_dict()) == back.cfg


def test_refusals_are_clear():
    with pytest.raises(ValueError, match="smear_keys must be True or False"):
        tiny_config(smear_keys="yes")
    with pytest.raises(ValueError, match="smeared keys"):
        ih.to_bridge(ih.HookedTransformer(tiny_config(smear_keys=True)))
