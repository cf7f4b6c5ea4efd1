"""The reference side of the differential tests (test_tl3_differential.py,
test_tl3_api_differential.py), run in `.venv-tl3` (TransformerLens 3.9).

    .venv-tl3/bin/python tests/tl3_reference.py WORK_DIR

WORK_DIR/cases.json lists the cases the test wrote (tests/tl3_cases.py). For each "diff" case
this builds TL 3's `HookedTransformer` from the case's config, loads the weights of
`NAME.weights.safetensors`, runs each of the case's batteries on the inputs of
`NAME.inputs.safetensors` ("main": `battery` below; "generate", "processing" and, with a
"tokenizer" entry, "tokenizer": tests/tl3_batteries.py) and writes NAME[.BATTERY].out.safetensors
(every tensor) and NAME[.BATTERY].out.json (everything else). The "sampling" case runs TL 3's
`utils.sample_logits` through `tl3_batteries.sampling_battery`. For each "checkpoint" case it
builds a TL 3 model with TL's own init, perturbs it, `torch.save`s its state dict, dumps
`cfg.to_dict()` as JSON and writes its logits, for `inducthead.load_pickle` to load on the other
side.

`battery` is the same function the test runs on our model: one piece of TL 3 API code, two
implementations under it. It imports neither TransformerLens nor inducthead, so it runs in both
venvs; what it calls must exist under the same name on both models and caches.
"""

from __future__ import annotations

import json
import sys
import traceback
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tl3_batteries import (
    generate_battery,
    processing_battery,
    recorder,
    sampling_battery,
    tokenizer_battery,
)


def battery(model, inputs: dict) -> tuple[dict, dict]:
    """TL 3 API calls on `model`: (tensors by name, JSON-able facts including every error).

    inputs: tokens [batch, pos]; one [1, pos]; left / left_mask, right / right_mask (padded
    tokens and their attention masks); resid [batch, pos, d_model] and shortformer (the
    shortformer position embedding or absent) for start_at_layer."""
    out: dict[str, torch.Tensor] = {}
    info: dict = {"errors": {}}
    toks = inputs["tokens"]
    sf = inputs.get("shortformer")
    cfg = model.cfg

    record = recorder(out, info, quiet=False)

    with torch.no_grad():
        record("logits", lambda: model(toks))
        record("loss", lambda: model(toks, return_type="loss"))
        record("both", lambda: tuple(model(toks, return_type="both")))
        record("both_fields", lambda: list(model(toks, return_type="both")._fields))
        record("none_is_none", lambda: model(toks, return_type=None) is None)
        record("loss_per_token", lambda: model(toks, return_type="loss", loss_per_token=True))
        for stop in (0, 1, -1):
            record(f"stop_at_{stop}", lambda s=stop: model(toks, stop_at_layer=s))
        for start in (1, -1):
            record(
                f"start_at_{start}",
                lambda s=start: tuple(
                    model(
                        inputs["resid"],
                        start_at_layer=s,
                        tokens=toks,
                        shortformer_pos_embed=sf,
                        return_type="both",
                    )
                ),
            )
        record(
            "start_0_stop_1",
            lambda: model(
                inputs["resid"], start_at_layer=0, stop_at_layer=1, shortformer_pos_embed=sf
            ),
        )
        for side in ("left", "right"):
            t, m = inputs[side], inputs[f"{side}_mask"]
            record(
                f"{side}.both",
                lambda t=t, m=m: tuple(model(t, return_type="both", attention_mask=m)),
            )
            record(
                f"{side}.loss_per_token",
                lambda t=t, m=m: model(
                    t, return_type="loss", attention_mask=m, loss_per_token=True
                ),
            )
            _, padded = model.run_with_cache(t, attention_mask=m)  # padding positions included
            for name in sorted(padded.keys()):
                out[f"{side}.cache:{name}"] = padded[name]

        _, cache = model.run_with_cache(toks)
        info["cache_names"] = sorted(cache.keys())
        for name in info["cache_names"]:
            out[f"cache:{name}"] = cache[name]
        info["hook_names"] = sorted(model.hook_dict)
        record("acc_resid", lambda: cache.accumulated_resid(return_labels=True))
        record("acc_resid_ln", lambda: cache.accumulated_resid(apply_ln=True, return_labels=True))
        record(
            "acc_resid_mid",
            lambda: cache.accumulated_resid(
                layer=1, incl_mid=True, apply_ln=True, return_labels=True
            ),
        )
        record("decompose", lambda: cache.decompose_resid(return_labels=True))
        record(
            "decompose_l1",
            lambda: cache.decompose_resid(
                layer=1, mlp_input=not cfg.attn_only, apply_ln=True, return_labels=True
            ),
        )
        record("heads", lambda: cache.stack_head_results(layer=-1, return_labels=True))
        record(
            "heads_ln", lambda: cache.stack_head_results(layer=1, apply_ln=True, return_labels=True)
        )
        record(
            "full",
            lambda: cache.get_full_resid_decomposition(expand_neurons=False, return_labels=True),
        )
        if not cfg.attn_only:
            record(
                "full_neurons",
                lambda: cache.get_full_resid_decomposition(
                    layer=1, expand_neurons=True, return_labels=True
                ),
            )
        stack = out.get("decompose")
        if stack is not None:
            record("ln_stack", lambda: cache.apply_ln_to_stack(stack, layer=-1))
            record("ln_stack_l1", lambda: cache.apply_ln_to_stack(stack, layer=1))
            record("logit_attrs", lambda: cache.logit_attrs(stack, tokens=toks))
            record(
                "logit_attrs_diff",
                lambda: cache.logit_attrs(stack, tokens=toks, incorrect_tokens=toks.flip(-1)),
            )
        _, one = model.run_with_cache(inputs["one"])
        one = one.remove_batch_dim()
        for name in ("blocks.0.attn.hook_pattern", f"blocks.{cfg.n_layers - 1}.hook_resid_post"):
            out[f"one:{name}"] = one[name]

        for name in (
            "W_E",
            "W_pos",
            "W_U",
            "b_U",
            "W_Q",
            "W_K",
            "W_V",
            "W_O",
            "b_Q",
            "b_K",
            "b_V",
            "b_O",
            "W_in",
            "W_out",
            "b_in",
            "b_out",
        ):
            record(f"weight:{name}", lambda n=name: getattr(model, n))
        for circuit in ("QK", "OV"):
            eig = getattr(model, circuit).eigenvalues
            out[f"{circuit}.eig"] = torch.stack([eig.real, eig.imag], -1)
        for mode in ("Q", "K", "V"):
            record(f"composition:{mode}", lambda m=mode: model.all_composition_scores(m))
        for layer in range(cfg.n_layers + 1):
            for mlp_input in (False, True):
                for mlp_biases in (False, True):
                    record(
                        f"accumulated_bias:{layer}:{int(mlp_input)}:{int(mlp_biases)}",
                        lambda a=(layer, mlp_input, mlp_biases): model.accumulated_bias(*a),
                    )
        record("residual_directions", lambda: model.tokens_to_residual_directions(toks))
        record("residual_direction_int", lambda: model.tokens_to_residual_directions(5))
        record("residual_direction_t", lambda: model.tokens_to_residual_directions(toks[0, :1]))
        info["n_params"] = int(cfg.n_params)
    return {k: v.clone().contiguous() for k, v in out.items()}, info


# ---------------------------------------------------------------------------- TL 3 side
failed: dict[str, str] = {}  # case (or case.battery) -> traceback


def _json_safe(value):
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)  # numpy floats too
    return str(value)  # torch.dtype, torch.device


def _diff_case(case: dict, work: Path) -> None:
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    name = case["name"]
    model = HookedTransformer(HookedTransformerConfig(**case["cfg"]))  # strict: TL 3's fields
    given = load_file(str(work / f"{name}.weights.safetensors"))
    theirs = model.state_dict()
    unknown = sorted(set(given) - set(theirs))
    if unknown:
        raise KeyError(f"{name}: weights TL 3 does not have: {unknown}")
    model.load_state_dict({**theirs, **given}, strict=True)
    model.eval()
    not_sent = sorted(set(theirs) - set(given))  # what TL has that we do not
    inputs = load_file(str(work / f"{name}.inputs.safetensors"))
    for which in case["batteries"]:
        key = name if which == "main" else f"{name}.{which}"
        try:
            if which == "main":
                tensors, info = battery(model, inputs)
                info["not_sent"] = not_sent
                info["cfg"] = _json_safe(model.cfg.to_dict())
                if model.cfg.positional_embedding_type == "alibi":
                    from transformer_lens.components import AbstractAttention

                    slopes = AbstractAttention.create_alibi_multipliers(model.cfg.n_heads)
                    tensors["alibi_multipliers"] = slopes
            elif which == "generate":
                tensors, info = generate_battery(model, inputs)
            else:
                tensors, info = processing_battery(model, inputs)
        except Exception:
            failed[key] = traceback.format_exc()
            continue
        _save(work, key, tensors, info)
    if "tokenizer" in case:  # last: it sets a tokenizer on the model
        try:
            tensors, info = tokenizer_battery(model, inputs, *case["tokenizer"])
            _save(work, f"{name}.tokenizer", tensors, info)
        except Exception:
            failed[f"{name}.tokenizer"] = traceback.format_exc()


def _sampling_case(case: dict, work: Path) -> None:
    from transformer_lens.utils import sample_logits

    inputs = load_file(str(work / "sampling.inputs.safetensors"))
    _save(work, "sampling", *sampling_battery(sample_logits, inputs))


def _save(work: Path, key: str, tensors: dict, info: dict) -> None:
    save_file(tensors, str(work / f"{key}.out.safetensors"))
    (work / f"{key}.out.json").write_text(json.dumps(_json_safe(info)))


def _checkpoint_case(case: dict, work: Path) -> None:
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    name = case["name"]
    model = HookedTransformer(HookedTransformerConfig(**case["cfg"]))
    g = torch.Generator().manual_seed(case.get("perturb_seed", 0))
    with torch.no_grad():
        for p in model.parameters():
            if p.dtype.is_floating_point:
                p.add_(torch.randn(p.shape, generator=g) * 0.2)
    model.eval()
    torch.save(model.state_dict(), work / f"{name}.pt")
    (work / f"{name}.cfg.json").write_text(json.dumps(_json_safe(model.cfg.to_dict())))
    tokens = load_file(str(work / f"{name}.inputs.safetensors"))["tokens"]
    with torch.no_grad():
        save_file({"logits": model(tokens)}, str(work / f"{name}.out.safetensors"))
    (work / f"{name}.out.json").write_text(json.dumps({"state_keys": sorted(model.state_dict())}))


def main(work: Path) -> int:
    warnings.filterwarnings("ignore")  # TL 3.9 warns that HookedTransformer is deprecated
    torch.set_num_threads(1)
    from importlib.metadata import version

    meta = {"transformer_lens": version("transformer-lens"), "torch": torch.__version__}
    meta["failed"] = failed
    run = {"diff": _diff_case, "checkpoint": _checkpoint_case, "sampling": _sampling_case}
    for case in json.loads((work / "cases.json").read_text()):
        try:
            run[case["kind"]](case, work)
        except Exception:
            failed[case["name"]] = traceback.format_exc()
    (work / "reference.json").write_text(json.dumps(meta))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
