import time

import pytest
import torch

import inducthead as ih
from inducthead.model import from_hf_gpt2
from inducthead.runs.pretrained import PretrainedLoadError, check_tokenizer


def test_local_hf_directory_boots_offline(tiny_gpt2_dir):
    from transformers import GPT2LMHeadModel

    bridge = ih.load_pretrained(tiny_gpt2_dir, device="cpu")
    assert type(bridge).__name__ == "TransformerBridge"
    assert bridge.tokenizer is not None and bridge.tokenizer.bos_token_id == 0
    hf = GPT2LMHeadModel.from_pretrained(tiny_gpt2_dir, attn_implementation="eager").eval()
    tokens = torch.randint(64, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(bridge(tokens), hf(tokens).logits, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(
            from_hf_gpt2(hf)(tokens), hf(tokens).logits, atol=1e-4, rtol=1e-4
        )


def test_from_hf_gpt2_has_our_hooks_and_equal_patterns(tiny_gpt2_dir):
    bridge = ih.load_pretrained(tiny_gpt2_dir)
    ours = from_hf_gpt2(tiny_gpt2_dir)
    tokens = torch.randint(64, (2, 30), generator=torch.Generator().manual_seed(1))
    _, a = bridge.run_with_cache(tokens)
    _, b = ours.run_with_cache(tokens)
    for l in range(2):
        name = f"blocks.{l}.attn.hook_pattern"
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-5)
    assert ours.cfg.act_fn == "gelu_new" and ours.cfg.bos_token_id == 0


def test_unknown_names_fail_fast_and_clearly_offline():
    start = time.perf_counter()
    with pytest.raises(
        PretrainedLoadError, match="not a local directory.*HF_HUB_OFFLINE.*local cache"
    ):
        ih.load_pretrained("nobody/no-such-model")
    with pytest.raises(PretrainedLoadError, match="NeelNanda/attn-only-2l"):
        ih.load_pretrained("NeelNanda/attn-only-2l")
    assert time.perf_counter() - start < 60  # no retry loop against an unreachable hub


def test_the_empty_tokenizer_trap_raises(tiny_gpt2_dir, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    empty = GPT2TokenizerFast.from_pretrained("gpt2")  # offline: no error, no vocabulary
    with pytest.raises(PretrainedLoadError, match="empty"):
        check_tokenizer(empty, "gpt2")
    with pytest.raises(PretrainedLoadError, match="empty"):
        ih.load_pretrained(tiny_gpt2_dir, tokenizer=empty)
    # a local model saved without tokenizer files: TransformerLens falls back to that empty one;
    # our analyses need token ids only, so it loads without a tokenizer (and says so)
    bare = tmp_path / "bare"
    GPT2LMHeadModel(
        GPT2Config(vocab_size=64, n_positions=64, n_embd=16, n_layer=2, n_head=2)
    ).save_pretrained(bare)
    with pytest.warns(UserWarning, match="no tokenizer files"):
        bridge = ih.load_pretrained(bare)
    assert bridge.tokenizer is None
    result = ih.detect(bridge)
    assert result.probe["bos_token_id"] is None and result.scores["prefix_matching"].shape == (2, 2)


def test_run_directories_and_other_paths(tmp_path):
    model = ih.load_pretrained("assets/demo")
    assert isinstance(model, ih.HookedTransformer) and model.cfg.model_name == "demo"
    assert torch.equal(
        ih.load_pretrained("assets/demo", checkpoint=0).W_E, ih.load("assets/demo", step=0).W_E
    )
    (tmp_path / "empty").mkdir()
    with pytest.raises(PretrainedLoadError, match="no config.json"):
        ih.load_pretrained(tmp_path / "empty")
