"""The batteries of tests/test_tl3_api_differential.py: `generate`, weight processing and the
tokenizer methods, run on our model (in the test) and on TransformerLens 3.9's (by
tests/tl3_reference.py in `.venv-tl3`), as `tl3_reference.battery` is. Like it, this module
imports neither TransformerLens nor inducthead: what it calls must exist under the same name on
both models.

Each battery returns (tensors by name, JSON-able facts, with every error under "errors").
"""

from __future__ import annotations

import copy
import warnings

import torch

PROMPT_LEN = 6
# sample_logits settings: each is run with its own torch.manual_seed on both sides
SAMPLING = {
    "plain": {},
    "temperature": dict(temperature=0.6),
    "top_k": dict(top_k=4),
    "top_p": dict(top_p=0.6),
    "freq_penalty": dict(freq_penalty=2.0),
    "mixed": dict(temperature=1.5, top_k=8, freq_penalty=0.7),
    "top_p_freq": dict(top_p=0.85, temperature=0.8, freq_penalty=1.0),
    "temperature_0": dict(temperature=0.0),
}
PROCESS_FLAGS = {
    "default": {},
    "no_fold_ln": dict(fold_ln=False),
    "no_center_writing": dict(center_writing_weights=False),
    "no_center_unembed": dict(center_unembed=False),
    "refactor": dict(refactor_factored_attn_matrices=True),
}
TEXTS = ["w3 w5 w7 w5", "w1 w2", "w4 w4 w9 w10 w11 w12"]
LONG_TEXT = " ".join(f"w{i % 20}" for i in range(20))  # 20 tokens, above n_ctx=16


def recorder(out: dict, info: dict, quiet: bool = True):
    """`record(name, fn)`: runs `fn` and files its value under `name`: a tensor in `out`, a
    state dict as `name:key`, a tuple of tensors as `name.i`, a `(tensor, labels)` pair as the
    tensor plus `info["name.labels"]`, anything else in `info`; an exception's first line goes
    to `info["errors"]` (an API difference: the test decides what is expected). `quiet`
    silences warnings (ours warn where TL 3 logs)."""
    info.setdefault("errors", {})

    def record(name, fn):
        try:
            with warnings.catch_warnings():
                if quiet:
                    warnings.simplefilter("ignore")
                value = fn()
        except Exception as e:
            first = (str(e).splitlines() or [""])[0][:300]
            info["errors"][name] = f"{type(e).__name__}: {first}"
            return None
        if isinstance(value, torch.Tensor):
            out[name] = value.detach()
        elif isinstance(value, dict) and all(isinstance(v, torch.Tensor) for v in value.values()):
            for key, v in value.items():  # a state dict
                out[f"{name}:{key}"] = v.detach()
        elif isinstance(value, tuple) and all(isinstance(v, torch.Tensor) for v in value):
            for i, v in enumerate(value):
                out[f"{name}.{i}"] = v.detach()
        elif isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], list):
            out[name] = value[0].detach()  # (tensor, labels)
            info[f"{name}.labels"] = value[1]
        else:
            info[name] = value
        return value

    return record


def _done(out: dict, info: dict) -> tuple[dict, dict]:
    return {k: v.clone().contiguous() for k, v in out.items()}, info


# ---------------------------------------------------------------------------- generate
def generate_battery(model, inputs: dict) -> tuple[dict, dict]:
    """`generate` from token ids, without a tokenizer: greedy, with and without EOS ids (one id
    that only some rows emit, a list every row emits early), and every SAMPLING setting under
    `torch.manual_seed` set right before the call; each with use_past_kv_cache False and True
    (names ending .kv0 / .kv1; ours has no cache and ignores the flag)."""
    out: dict = {}
    info: dict = {}
    record = recorder(out, info)
    prompts = inputs["tokens"][:, :PROMPT_LEN].clone()

    def gen(name, prompt=prompts, seed=None, **kwargs):
        for kv in (False, True):

            def call(kv=kv):
                if seed is not None:
                    torch.manual_seed(seed)
                return model.generate(prompt, use_past_kv_cache=kv, verbose=False, **kwargs)

            record(f"{name}.kv{int(kv)}", call)

    gen("greedy", max_new_tokens=5, do_sample=False, stop_at_eos=False)
    if "greedy.kv0" not in out:  # e.g. d_vocab_out > d_vocab: new ids that cannot be read
        return _done(out, info)
    new = out["greedy.kv0"][:, PROMPT_LEN:]
    info["eos_one"] = int(new[0, 2])  # emitted by row 0 at step 2: the others may not emit it
    info["eos_all"] = sorted({int(t) for t in new[:, 1]})  # every row has finished by step 1
    gen("greedy_eos", max_new_tokens=5, do_sample=False, eos_token_id=info["eos_one"])
    gen("greedy_eos_list", max_new_tokens=5, do_sample=False, eos_token_id=info["eos_all"])
    gen("greedy_no_eos_id", max_new_tokens=3, do_sample=False)  # no tokenizer, no EOS id
    gen("one_row", prompt=prompts[0], max_new_tokens=3, do_sample=False, stop_at_eos=False)
    for i, (name, kwargs) in enumerate(SAMPLING.items()):
        gen(f"sample.{name}", seed=100 + i, max_new_tokens=6, stop_at_eos=False, **kwargs)
    gen("sample.eos", seed=7, max_new_tokens=6, eos_token_id=info["eos_one"], top_k=5)
    return _done(out, info)


def sampling_battery(sample_logits, inputs: dict) -> tuple[dict, dict]:
    """`sample_logits` itself (ours, or TL 3's `utils.sample_logits`), 20 draws of 64 rows per
    SAMPLING setting from one seed: the same draws, or a different function."""
    out: dict = {}
    logits, tokens = inputs["sample_logits"], inputs["sample_tokens"]
    for i, (name, kwargs) in enumerate(SAMPLING.items()):
        torch.manual_seed(i)
        draws = [sample_logits(logits.clone(), tokens=tokens, **kwargs) for _ in range(20)]
        out[f"sample_logits.{name}"] = torch.stack(draws)
    return _done(out, {"errors": {}})


# ---------------------------------------------------------------------------- weights
def processing_battery(model, inputs: dict) -> tuple[dict, dict]:
    """The state-dict methods (fold_layer_norm with each flag setting, center_writing_weights,
    center_unembed, fold_value_biases) on the model's state dict, then process_weights_ on a
    copy of the model for each PROCESS_FLAGS setting: its state dict, logits, loss,
    cfg.normalization_type (and, for the default, every cache entry and hook name); for the
    refactor, whose factors are unique only up to signs, W_QK, W_OV and the logits."""
    out: dict = {}
    info: dict = {}
    record = recorder(out, info)
    toks = inputs["tokens"]

    def state():  # a fresh dict of fresh tensors: TL 3's methods write into the dict given
        return {k: v.clone() for k, v in model.state_dict().items()}

    with torch.no_grad():
        record("fold_layer_norm", lambda: model.fold_layer_norm(state()))
        for biases in (False, True):
            record(
                f"fold_layer_norm.biases{int(biases)}_no_centre",
                lambda b=biases: model.fold_layer_norm(
                    state(), fold_biases=b, center_weights=False
                ),
            )
        record("fold_layer_norm.no_biases", lambda: model.fold_layer_norm(state(), False))
        record("center_writing_weights", lambda: model.center_writing_weights(state()))
        record("center_unembed", lambda: model.center_unembed(state()))
        record("fold_value_biases", lambda: model.fold_value_biases(state()))
        for name, flags in PROCESS_FLAGS.items():
            processed = copy.deepcopy(model)
            if record(f"{name}.ok", lambda m=processed, f=flags: (m.process_weights_(**f), 1)[1]):
                _processed_outputs(processed, name, toks, out, info)
    return _done(out, info)


def _processed_outputs(model, name: str, toks, out: dict, info: dict) -> None:
    info[f"{name}.normalization_type"] = model.cfg.normalization_type
    out[f"{name}.logits"] = model(toks)
    out[f"{name}.loss"] = model(toks, return_type="loss")
    if name == "refactor":
        out[f"{name}.QK"], out[f"{name}.OV"] = model.QK.AB, model.OV.AB
        return
    for key, value in model.state_dict().items():
        out[f"{name}.state:{key}"] = value
    if name == "default":
        _, cache = model.run_with_cache(toks)
        for key, value in cache.items():
            out[f"{name}.cache:{key}"] = value
        info[f"{name}.hook_names"] = sorted(model.hook_dict)


# ---------------------------------------------------------------------------- tokenizer
def tokenizer_battery(model, inputs: dict, tokenizer_dir: str, padding_side) -> tuple[dict, dict]:
    """The tokenizer methods, and text input to forward, run_with_cache and generate, with the
    tokenizer saved in `tokenizer_dir` (AutoTokenizer) set by `set_tokenizer(tok,
    default_padding_side=padding_side)`."""
    from transformers import AutoTokenizer

    out: dict = {}
    info: dict = {}
    record = recorder(out, info)
    model.set_tokenizer(AutoTokenizer.from_pretrained(tokenizer_dir), padding_side)
    tok = model.tokenizer
    info["tokenizer"] = [tok.padding_side, tok.pad_token_id, tok.bos_token_id, tok.eos_token_id]
    info["tokenizer_prepends_bos"] = model.cfg.tokenizer_prepends_bos
    with torch.no_grad():
        _text_to_tokens(model, record)
        ids = model.to_tokens(TEXTS, padding_side="right")
        _tokens_to_text(model, record, ids)
        _text_forward(model, record, out)
        _text_generate(model, record)
    return _done(out, info)


def _text_to_tokens(model, record) -> None:
    record("to_tokens", lambda: model.to_tokens(TEXTS[0]))
    record("to_tokens.list", lambda: model.to_tokens(TEXTS))
    for bos in (True, False):
        record(f"to_tokens.bos{int(bos)}", lambda b=bos: model.to_tokens(TEXTS[0], prepend_bos=b))
        for side in ("left", "right"):
            record(
                f"to_tokens.list.bos{int(bos)}.{side}",
                lambda b=bos, s=side: model.to_tokens(TEXTS, prepend_bos=b, padding_side=s),
            )
    record("to_tokens.long", lambda: model.to_tokens(LONG_TEXT))
    record("to_tokens.long_untruncated", lambda: model.to_tokens(LONG_TEXT, truncate=False))
    record("to_tokens.cpu", lambda: model.to_tokens(TEXTS[1], move_to_device=False))
    record("to_single_token", lambda: model.to_single_token("w5"))
    record("to_single_token.two", lambda: model.to_single_token("w5 w6"))
    record("to_single_str_token", lambda: model.to_single_str_token(7))
    for mode in ("first", "last"):
        record(f"position.{mode}", lambda m=mode: model.get_token_position("w5", TEXTS[0], mode=m))
        record(
            f"position.no_bos.{mode}",
            lambda m=mode: model.get_token_position("w5", TEXTS[0], mode=m, prepend_bos=False),
        )
    record("position.absent", lambda: model.get_token_position("w20", TEXTS[0]))


def _tokens_to_text(model, record, ids) -> None:
    record("to_string.1d", lambda: model.to_string(ids[0]))
    record("to_string.2d", lambda: model.to_string(ids))
    record("to_string.list", lambda: model.to_string([5, 7, 9]))
    record("to_string.numpy", lambda: model.to_string(ids[1].numpy()))
    record("to_string.0d", lambda: model.to_string(torch.tensor(5)))
    record("to_str_tokens.str", lambda: model.to_str_tokens(TEXTS[0]))
    record("to_str_tokens.no_bos", lambda: model.to_str_tokens(TEXTS[0], prepend_bos=False))
    record("to_str_tokens.1d", lambda: model.to_str_tokens(ids[0]))
    record("to_str_tokens.2d", lambda: model.to_str_tokens(ids[:1]))
    record("to_str_tokens.numpy", lambda: model.to_str_tokens(ids[1].numpy()))
    record("to_str_tokens.texts", lambda: model.to_str_tokens(TEXTS))
    record("to_str_tokens.tensors", lambda: model.to_str_tokens([ids[0], ids[1]]))
    for mode in ("first", "last"):
        record(f"position.ids.{mode}", lambda m=mode: model.get_token_position(7, ids[:1], mode=m))


def _text_forward(model, record, out: dict) -> None:
    record("logits", lambda: model(TEXTS[0]))
    record("logits.no_bos", lambda: model(TEXTS[0], prepend_bos=False))
    record("loss", lambda: model(TEXTS[0], return_type="loss"))
    record("both.list", lambda: tuple(model(TEXTS, return_type="both")))
    for side in ("left", "right"):
        record(
            f"both.list.{side}",
            lambda s=side: tuple(model(TEXTS, return_type="both", padding_side=s)),
        )
        record(
            f"loss_per_token.list.{side}",
            lambda s=side: model(TEXTS, return_type="loss", loss_per_token=True, padding_side=s),
        )
    _, cache = model.run_with_cache(TEXTS[0])
    for key, value in cache.items():
        out[f"cache:{key}"] = value
    _, cache = model.run_with_cache(TEXTS, padding_side="left")
    for key in ("blocks.0.attn.hook_pattern", f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"):
        out[f"left.cache:{key}"] = cache[key]


def _text_generate(model, record) -> None:
    greedy = dict(max_new_tokens=4, do_sample=False, verbose=False)
    record("generate.str", lambda: model.generate(TEXTS[0], stop_at_eos=False, **greedy))
    record("generate.str.eos", lambda: model.generate(TEXTS[0], **greedy))
    record(
        "generate.str.tokens",
        lambda: model.generate(TEXTS[0], stop_at_eos=False, return_type="tokens", **greedy),
    )
    record(
        "generate.str.no_bos",
        lambda: model.generate(
            TEXTS[1], stop_at_eos=False, prepend_bos=False, return_type="tokens", **greedy
        ),
    )
    for kv in (False, True):
        record(
            f"generate.list.kv{int(kv)}",
            lambda k=kv: model.generate(TEXTS, stop_at_eos=False, use_past_kv_cache=k, **greedy),
        )
        record(
            f"generate.list.tokens.kv{int(kv)}",
            lambda k=kv: model.generate(
                TEXTS, stop_at_eos=False, use_past_kv_cache=k, return_type="tokens", **greedy
            ),
        )

    def sample():
        torch.manual_seed(3)
        return model.generate(TEXTS[0], max_new_tokens=5, top_k=6, verbose=False)

    record("generate.sample", sample)
