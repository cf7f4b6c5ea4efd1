"""TransformerLens 4's tools that take a HookedRootModule, run on our model (our venv): TL's
patching, `head_detector.detect_head` with a tokenizer attached, `SVDInterpreter` and
`FactoredMatrix` on our `OV` / `QK`. Each is compared with the same tool on a TL 4 bridge of the
same weights (`ih.to_bridge`). The companion of test_tl3_differential.py, which compares the
model itself with TransformerLens 3.9."""

import pytest
import torch
from conftest import perturbed

import inducthead as ih

BASE = dict(n_layers=2, d_model=32, n_heads=4, d_head=8, d_vocab=23, n_ctx=24, seed=0)


def _tool_model() -> ih.HookedTransformer:
    cfg = ih.HookedTransformerConfig(**BASE)  # LN, standard positions, gelu: a bridge has them
    return perturbed(ih.HookedTransformer(cfg), scale=0.2, seed=3).eval()


def _tokens(cfg, batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(cfg.d_vocab, (batch, cfg.n_ctx), generator=g)


@pytest.mark.slow  # 2 x 184 patched forward passes, half of them through a bridge
def test_transformerlens_4_patching_on_our_model_equals_it_on_a_bridge(one_cpu_thread):
    from transformer_lens import patching

    model = _tool_model()
    bridge = ih.to_bridge(model).eval()
    clean = _tokens(model.cfg, 2, 5)
    corrupted = clean.clone()
    corrupted[:, 3:9] = (corrupted[:, 3:9] + 7) % model.cfg.d_vocab

    def metric(logits):
        return (logits[:, -1, 1] - logits[:, -1, 2]).mean()

    tools = (patching.get_act_patch_block_every, patching.get_act_patch_attn_head_all_pos_every)
    for tool in tools:
        results = []
        for m in (model, bridge):
            _, cache = m.run_with_cache(clean)
            results.append(tool(m, corrupted, cache, metric))
        assert results[0].shape == results[1].shape
        assert results[0].abs().max() > 1e-3  # the patches do something
        torch.testing.assert_close(results[0], results[1], atol=1e-4, rtol=1e-4)


def test_transformerlens_4_detect_head_with_a_tokenizer_attached(tmp_path, one_cpu_thread):
    from transformer_lens.head_detector import detect_head

    from inducthead.testing import word_tokenizer

    model = _tool_model()
    tokenizer = word_tokenizer(tmp_path / "tok", model.cfg.d_vocab)
    bridge = ih.to_bridge(model, tokenizer=tokenizer).eval()
    model.tokenizer = tokenizer  # assigned directly, as TL 3 notebooks do (no set_tokenizer)
    order = torch.randperm(model.cfg.d_vocab - 2, generator=torch.Generator().manual_seed(0))
    words = [f"w{i}" for i in order[:9].tolist()]
    text = " ".join(words + words)  # repeated: induction and duplicate-token patterns apply
    assert torch.equal(model.to_tokens(text), bridge.to_tokens(text))
    for head in ("previous_token_head", "duplicate_token_head", "induction_head"):
        for measure in ("mul", "abs"):
            ours = detect_head(model, text, head, error_measure=measure)
            theirs = detect_head(bridge, text, head, error_measure=measure)
            assert ours.shape == (model.cfg.n_layers, model.cfg.n_heads)
            torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_transformerlens_4_svd_interpreter_and_factored_matrix_on_our_weights(one_cpu_thread):
    from transformer_lens import FactoredMatrix, SVDInterpreter

    model = _tool_model()
    bridge = ih.to_bridge(model).eval()
    for kind, head in (("OV", 2), ("w_in", None), ("w_out", None)):
        args = dict(layer_index=1, head_index=head, num_vectors=6)  # OV has rank d_head = 8
        ours = SVDInterpreter(model).get_singular_vectors(kind, **args)
        theirs = SVDInterpreter(bridge).get_singular_vectors(kind, **args)
        torch.testing.assert_close(ours.abs(), theirs.abs())  # singular vectors: up to sign
    for circuit, (left, right) in {
        "OV": (model.W_V, model.W_O),
        "QK": (model.W_Q, model.W_K.transpose(-2, -1)),
    }.items():
        ours, theirs = getattr(model, circuit), getattr(bridge, circuit)
        assert isinstance(ours, FactoredMatrix) and ours.shape == (2, 4, 32, 32)
        dense = left @ right
        torch.testing.assert_close(ours.AB, dense)
        torch.testing.assert_close(ours.AB, theirs.AB, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours[1, 3].AB, dense[1, 3])
        torch.testing.assert_close(ours.T.AB, dense.transpose(-2, -1))
        torch.testing.assert_close(ours.norm(), dense.norm(dim=(-2, -1)), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            ours.S, torch.linalg.svdvals(dense)[..., :8], atol=1e-5, rtol=1e-4
        )
        product = ours[0, 1] @ getattr(model, circuit)[1, 2]  # a composition's factored product
        torch.testing.assert_close(product.AB, dense[0, 1] @ dense[1, 2], atol=1e-5, rtol=1e-4)
