"""The cases of the differential tests against TransformerLens 3.9 (test_tl3_differential.py,
test_tl3_api_differential.py), and running the reference: `run_reference` saves every case's
config, weights and inputs, runs tests/tl3_reference.py once in `.venv-tl3` over all of them and
returns a `Reference` to read what TL 3 computed (the session fixture `tl3_reference` of
conftest.py calls it once for both modules). `compare` records the largest |ours - TL 3| per
output kind in WORST (written to $TL3_DIFF_REPORT at the end of the session).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import perturbed
from safetensors.torch import load_file, save_file

import inducthead as ih
from inducthead.testing import word_tokenizer

HERE = Path(__file__).resolve().parent
BASE = dict(n_layers=2, d_model=32, n_heads=4, d_head=8, d_vocab=23, n_ctx=16, seed=0)
OURS_ONLY = (  # not TL fields
    "bos_token_id",
    "relative_window",
    "use_bias",
    "embed_init_std",
    "smear_keys",
)

# Our configs (TL 3 field names), each compared with TL 3 built from the same fields. Together:
# every normalization, every positional type TL 3 shares with us, attention-only and each act_fn,
# the hook switches, grouped-query attention, another output vocabulary, bidirectional attention,
# bias-free layers (TL 3 always has biases: ours are compared with its zero biases).
DIFF_CASES = {
    "ln_gelu_standard_3_layers": dict(normalization_type="LN", act_fn="gelu", n_layers=3),
    "none_relu_standard": dict(normalization_type=None, act_fn="relu", d_mlp=48),
    "lnpre_gelu_new_shortformer": dict(
        normalization_type="LNPre",
        act_fn="gelu_new",
        positional_embedding_type="shortformer",
        n_heads=5,
        d_head=6,  # n_heads * d_head != d_model
    ),
    "rms_silu_rotary": dict(  # (default_prepend_bos: read by the tokenizer methods)
        normalization_type="RMS",
        default_prepend_bos=False,
        act_fn="silu",
        positional_embedding_type="rotary",
        rotary_base=500,
        attn_scale=5.0,
    ),
    "rmspre_rotary_adjacent_partial_attn_only": dict(
        normalization_type="RMSPre",
        attn_only=True,
        positional_embedding_type="rotary",
        rotary_adjacent_pairs=True,
        rotary_dim=4,
    ),
    "ln_alibi_attn_only": dict(attn_only=True, positional_embedding_type="alibi"),
    # TL 3's ALiBi slopes are 2^(-8/n)-geometric for every head count; ours are the paper's,
    # which agree for powers of two only (checked in test_alibi_slopes_...).
    "ln_alibi_3_heads": dict(d_model=24, n_heads=3, positional_embedding_type="alibi"),
    "ln_hook_switches": dict(
        use_attn_result=True,
        use_split_qkv_input=True,
        use_hook_mlp_in=True,
        use_hook_tokens=True,
        use_attn_in=True,
    ),
    "none_attn_in_shortformer_attn_only": dict(
        normalization_type=None,
        attn_only=True,
        positional_embedding_type="shortformer",
        use_attn_in=True,
        use_attn_result=True,
    ),
    "rms_gqa_rotary_split": dict(
        normalization_type="RMS",
        n_key_value_heads=2,
        positional_embedding_type="rotary",
        use_split_qkv_input=True,
    ),
    "ln_gqa_ungrouped_rotary": dict(
        n_key_value_heads=2,
        ungroup_grouped_query_attention=True,
        positional_embedding_type="rotary",
    ),
    "ln_gqa_ungrouped_split": dict(
        n_key_value_heads=2,
        ungroup_grouped_query_attention=True,
        use_split_qkv_input=True,
        act_fn="relu",
    ),
    "ln_no_bias_vocab_out": dict(use_bias=False, d_vocab_out=17, use_attn_scale=False),
    "ln_bidirectional_vocab_out": dict(attention_dir="bidirectional", d_vocab_out=29, eps=1e-3),
}

# TL 3 checkpoints: made by TL 3 (its init, perturbed), loaded here by load_pickle.
CHECKPOINTS = {
    # ARENA's attention-only models: TL 3 fills in d_mlp = 4 d_model and act_fn even so
    "arena_attn_only": dict(
        attn_only=True,
        normalization_type=None,
        seed=398,
        positional_embedding_type="shortformer",
        use_attn_result=True,
    ),
    "ln_gelu": dict(act_fn="gelu", d_mlp=64, init_mode="xavier_normal", checkpoint_index=3),
    # rotary_base is a float in TL 3 configs made from Hugging Face ones
    "rms_rotary_gqa": dict(
        normalization_type="RMS",
        act_fn="silu",
        n_key_value_heads=2,
        positional_embedding_type="rotary",
        rotary_dim=4,
        rotary_adjacent_pairs=True,
        rotary_base=5000.0,
    ),
    "lnpre_alibi_attn_only": dict(
        normalization_type="LNPre", attn_only=True, positional_embedding_type="alibi"
    ),
    "rmspre_bidirectional": dict(
        normalization_type="RMSPre",
        act_fn="gelu_new",
        attention_dir="bidirectional",
        d_vocab_out=17,
        use_split_qkv_input=True,
        use_hook_mlp_in=True,
        use_hook_tokens=True,
        default_prepend_bos=False,
    ),
    "none_relu_no_scale": dict(normalization_type=None, act_fn="relu", use_attn_scale=False),
    # newer TL 3 settings at values TL 3's HookedTransformer never reads here: parameters of
    # features that are off, encoder-decoder keys, loading and device keys
    "inert_tl3_settings": dict(
        act_fn="gelu",
        window_size=8,
        rotary_base_local=1e6,
        yarn_factor=4.0,
        NTK_by_parts_factor=4.0,
        decoder_start_token_id=0,
        relative_attention_num_buckets=32,
        quantization_method="none",
        original_architecture="GPT2LMHeadModel",
        tokenizer_prepends_bos=True,
        n_devices=1,
    ),
}
# TL 3 settings that change the function and that our model does not implement: refused by name.
# The first three leave the state dict exactly as a plain model's, so only the config can tell.
REFUSED = {
    "parallel_attn_mlp": dict(act_fn="gelu", parallel_attn_mlp=True),
    "output_logits_soft_cap": dict(act_fn="gelu", output_logits_soft_cap=5.0),
    "use_local_attn": dict(
        attn_only=True, use_local_attn=True, window_size=4, attn_types=["global", "local"]
    ),
    "original_architecture": dict(
        act_fn="gelu", normalization_type="RMS", original_architecture="Olmo2ForCausalLM"
    ),
    "gated_mlp": dict(act_fn="silu", gated_mlp=True),
}

# Run through some of tests/tl3_batteries.py's batteries only: (config, batteries).
EXTRA_CASES = {
    # TL 3 folds ln1 into a shortformer model's W_Q/W_K (changing its function); ours refuses
    "ln_shortformer": (
        dict(positional_embedding_type="shortformer", act_fn="gelu"),
        ["processing"],
    ),
    # a KV cache is exact for causal attention only (rotary: TL 3.9's cache handles its positions)
    "rotary_bidirectional": (
        dict(attention_dir="bidirectional", positional_embedding_type="rotary", act_fn="relu"),
        ["generate"],
    ),
}
# The tokenizer battery (tl3_batteries.tokenizer_battery) runs on these, with the
# `word_tokenizer` saved in WORK/tokenizer and this default_padding_side for set_tokenizer.
TOKENIZER_CASES = {"ln_gelu_standard_3_layers": None, "rms_silu_rotary": "left"}
BATTERIES = ["main", "generate", "processing"]  # on every DIFF_CASES model


WORST: dict[str, float] = {}  # largest |ours - TL 3| per output kind (TL3_DIFF_REPORT=FILE)


def tokens(cfg, batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(min(cfg.d_vocab, cfg.d_vocab_out), (batch, cfg.n_ctx), generator=g)


def inputs(cfg: ih.HookedTransformerConfig) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    toks = tokens(cfg, 3, 0)
    left, right = toks[:2].clone(), toks[:2].clone()
    left_mask, right_mask = torch.ones_like(left), torch.ones_like(right)
    left[0, :5], left_mask[0, :5] = 0, 0
    right[0, -4:], right_mask[0, -4:] = 0, 0
    inputs = dict(
        tokens=toks,
        one=toks[1:2].clone(),
        left=left,
        left_mask=left_mask,
        right=right,
        right_mask=right_mask,
        resid=torch.randn(3, cfg.n_ctx, cfg.d_model, generator=g),
    )
    if cfg.positional_embedding_type == "shortformer":
        inputs["shortformer"] = torch.randn(3, cfg.n_ctx, cfg.d_model, generator=g)
    return inputs


def tl3_state(model: ih.HookedTransformer) -> dict[str, torch.Tensor]:
    """Our state dict under TL 3's names (they are ours), with explicit zero biases where a
    use_bias=False model has none: TL 3 always has them."""
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    with_biases = ih.HookedTransformer(model.cfg.replace(use_bias=True), init=False)
    for key, value in with_biases.state_dict().items():
        state.setdefault(key, torch.zeros(value.shape))
    return state


def our_model(name: str) -> ih.HookedTransformer:
    extra = DIFF_CASES[name] if name in DIFF_CASES else EXTRA_CASES[name][0]
    cfg = ih.HookedTransformerConfig(**{**BASE, **extra})
    return perturbed(ih.HookedTransformer(cfg), scale=0.2, seed=1).eval()


class Reference:
    """What TL 3.9 computed for every case (one subprocess in .venv-tl3)."""

    def __init__(self, work: Path, meta: dict):
        self.work, self.meta = work, meta
        self.tokenizer_dir = work / "tokenizer"

    def outputs(self, name: str, battery: str = "main") -> tuple[dict, dict]:
        """(tensors, facts) of one battery ("main": tl3_reference.battery) on case `name`."""
        key = name if battery == "main" else f"{name}.{battery}"
        if key in self.meta["failed"]:
            pytest.fail(f"TL 3 failed on case {key}:\n{self.meta['failed'][key]}")
        tensors = load_file(str(self.work / f"{key}.out.safetensors"))
        return tensors, json.loads((self.work / f"{key}.out.json").read_text())


def _reference_python() -> Path:
    done = subprocess.run(
        [sys.executable, str(HERE / "tl3_env.py")], capture_output=True, text=True
    )
    if done.returncode:  # (no registry: the modules skipped when they were imported)
        pytest.fail(f"could not create .venv-tl3 (tests/tl3_env.py):\n{done.stdout}{done.stderr}")
    return Path(done.stdout.strip().splitlines()[-1])


def sampling_inputs() -> dict[str, torch.Tensor]:
    """Logits and earlier tokens for sample_logits (tl3_batteries.sampling_battery)."""
    g = torch.Generator().manual_seed(11)
    return dict(
        sample_logits=torch.randn(64, BASE["d_vocab"], generator=g) * 3,
        sample_tokens=torch.randint(BASE["d_vocab"], (64, 10), generator=g),
    )


def run_reference(work: Path) -> Reference:
    python = _reference_python()
    word_tokenizer(work / "tokenizer", BASE["d_vocab"])
    cases = [{"name": "sampling", "kind": "sampling"}]
    save_file(sampling_inputs(), str(work / "sampling.inputs.safetensors"))
    for name in [*DIFF_CASES, *EXTRA_CASES]:
        model = our_model(name)
        tl3_cfg = {k: v for k, v in model.cfg.to_dict().items() if k not in OURS_ONLY}
        case = {"name": name, "kind": "diff", "cfg": tl3_cfg}
        case["batteries"] = BATTERIES if name in DIFF_CASES else EXTRA_CASES[name][1]
        if name in TOKENIZER_CASES:
            case["tokenizer"] = [str(work / "tokenizer"), TOKENIZER_CASES[name]]
        cases.append(case)
        save_file(tl3_state(model), str(work / f"{name}.weights.safetensors"))
        save_file(inputs(model.cfg), str(work / f"{name}.inputs.safetensors"))
    for name, extra in {**CHECKPOINTS, **REFUSED}.items():
        cfg = {**BASE, **extra}
        cases.append({"name": name, "kind": "checkpoint", "cfg": cfg})
        toks = torch.randint(
            BASE["d_vocab"], (3, BASE["n_ctx"]), generator=torch.Generator().manual_seed(1)
        )
        save_file({"tokens": toks}, str(work / f"{name}.inputs.safetensors"))
    (work / "cases.json").write_text(json.dumps(cases))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    done = subprocess.run(
        [str(python), str(HERE / "tl3_reference.py"), str(work)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"tl3_reference.py failed:\n{done.stdout}\n{done.stderr}"
    meta = json.loads((work / "reference.json").read_text())
    assert meta["transformer_lens"] == "3.9.0", meta
    return Reference(work, meta)


def write_report() -> None:
    if os.environ.get("TL3_DIFF_REPORT"):
        Path(os.environ["TL3_DIFF_REPORT"]).write_text(json.dumps(WORST, indent=1, sort_keys=True))


def _kind(name: str) -> str:
    """The output kind a battery entry belongs to, for the worst-difference report."""
    if ":" in name and name.split(":")[0].endswith(("cache", "one")):
        return name.split(":")[0] + ":" + name.split(".")[-1]
    return name.split(":")[0].split(".")[0]


def compare(
    problems: list,
    name: str,
    ours: torch.Tensor,
    theirs: torch.Tensor,
    atol: float = 1e-5,
    rtol: float = 1e-5,
) -> None:
    if ours.shape != theirs.shape:
        problems.append(f"{name}: shape {tuple(ours.shape)}, TL 3 {tuple(theirs.shape)}")
        return
    ours, theirs = ours.double(), theirs.double()
    diff = (ours - theirs).abs()
    worst = float(diff.max()) if diff.numel() else 0.0
    WORST[_kind(name)] = max(WORST.get(_kind(name), 0.0), worst)
    if not torch.allclose(ours, theirs, atol=atol, rtol=rtol, equal_nan=True):
        problems.append(f"{name}: max |diff| {worst:.3g}")


def same_eigenvalues(problems: list, name: str, ours: torch.Tensor, theirs: torch.Tensor):
    """Per head, each eigenvalue (re, im) has a match on the other side (their order is
    LAPACK's, not part of the API)."""
    a, b = ours.flatten(0, -3).double(), theirs.flatten(0, -3).double()
    d = torch.cdist(a, b)  # [heads, d, d]
    worst = float(torch.maximum(d.min(-1).values.max(), d.min(-2).values.max()))
    WORST["eigenvalues"] = max(WORST.get("eigenvalues", 0.0), worst)
    if worst > 1e-4 * (1 + float(b.abs().max())):
        problems.append(f"{name}: eigenvalues differ by {worst:.3g}")


def expected_hook_names(cfg) -> tuple[set, set]:
    """(hook points only we have, hook points only TL 3 has). Ours: `hook_tokens` always exists
    and runs with use_hook_tokens (TL 3 creates it only then), so set_use_* style switching works.
    TL 3: an unused `hook_pos_embed` on ALiBi models, an `attn.hook_attn_input` on shortformer
    models and `hook_mlp_in` / `hook_mlp_out` on attention-only ones, none of which ever runs;
    ours have none of them (a hook there would never fire: ours raise HookNameError instead)."""
    ours = set() if cfg.use_hook_tokens else {"hook_tokens"}
    theirs = set()
    if cfg.attn_only:  # TL 3's attention-only blocks keep MLP hook points that never run
        theirs |= {f"blocks.{l}.hook_mlp_{io}" for l in range(cfg.n_layers) for io in ("in", "out")}
    if cfg.positional_embedding_type == "alibi":
        theirs.add("hook_pos_embed")
    if cfg.positional_embedding_type == "shortformer":
        theirs |= {f"blocks.{l}.attn.hook_attn_input" for l in range(cfg.n_layers)}
    return ours, theirs
