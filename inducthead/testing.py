"""Small local models and tokenizers for tests, benchmarks and users' own tests: built offline with
`transformers`/`tokenizers`, no hub access.

    from inducthead.testing import tiny_gpt2, word_tokenizer

    bridge = ih.load_pretrained(tiny_gpt2(tmp_path / "gpt2"))   # a 2-layer GPT-2 directory
    tokenizer = word_tokenizer(tmp_path / "tok", 64)           # "<bos>" "<unk>" "w0" ... "w61"
    files = synthetic_trajectory(tmp_path / "synthetic")      # checkpoints with a known answer
"""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["tiny_gpt2", "word_tokenizer", "synthetic_trajectory"]


def word_tokenizer(path: str | Path, vocab: int):
    """A WordLevel tokenizer over "<bos>" (id 0, also EOS), "<unk>" (id 1), "w0", "w1", ... (`vocab`
    ids in all) that splits on whitespace; saved to `path` and reloaded with AutoTokenizer (an
    in-memory PreTrainedTokenizerFast fails inside TransformerLens)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    words = ["<bos>", "<unk>"] + [f"w{i}" for i in range(vocab - 2)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<bos>", unk_token="<unk>"
    )
    fast.save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


def tiny_gpt2(
    path: str | Path,
    vocab: int = 64,
    n_ctx: int = 128,
    d_model: int = 32,
    n_layers: int = 2,
    n_heads: int = 4,
    seed: int = 0,
) -> Path:
    """A random GPT-2 (`transformers`' GPT2LMHeadModel, BOS = EOS = id 0) with its
    `word_tokenizer`, saved to the directory `path`, which is returned: load it with
    `ih.load_pretrained(path)` or `GPT2LMHeadModel.from_pretrained(path)`.

    Every parameter gets N(0, 0.3²) noise on top of GPT-2's init, which leaves attention nearly
    uniform. Deterministic in `seed`; torch's global random state is left as it was."""
    from transformers import GPT2Config, GPT2LMHeadModel

    path = Path(path)
    word_tokenizer(path, vocab)
    cfg = GPT2Config(
        vocab_size=vocab,
        n_positions=n_ctx,
        n_embd=d_model,
        n_layer=n_layers,
        n_head=n_heads,
        bos_token_id=0,
        eos_token_id=0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(cfg)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.3)
    model.save_pretrained(path)
    return path


def synthetic_trajectory(
    path: str | Path,
    s0: int = 100,
    steps=tuple(range(0, 201, 10)),
    ramp: int = 20,
    d_vocab: int = 24,
    n_ctx: int = 64,
) -> list[Path]:
    """Checkpoint files of a trajectory with known structure: the hand-built induction circuit
    (`inducthead.model.induction_circuit`) whose layer-1 key weights are scaled by
    alpha(step) = clip((step - s0) / ramp, 0, 1). Before `s0` layer 1 attends uniformly (no
    induction), by s0 + ramp the circuit is complete; the weights move along one direction only,
    so a weight PCA finds one component and the updates span one dimension. Written to
    `path/step_XXXXXXXX.safetensors`; returns the files in step order."""
    from inducthead.model import induction_circuit
    from inducthead.runs.checkpoint import checkpoint_name, write_checkpoint

    path = Path(path)
    model, _ = induction_circuit(d_vocab=d_vocab, n_ctx=n_ctx)
    full = [b.attn.W_K.detach().clone() for b in model.blocks]
    files = []
    for step in steps:
        alpha = min(1.0, max(0.0, (step - s0) / ramp))
        with torch.no_grad():
            model.blocks[1].attn.W_K.copy_(alpha * full[1])
        files.append(write_checkpoint(path / checkpoint_name(step), model, step=step))
    return files
