"""The one explicit way to read a pickle-based checkpoint (`.pt`, `.pth`, ...): `load_pickle`.

inducthead's own checkpoints are safetensors + JSON and never execute code. Files made elsewhere,
e.g. `torch.save(model.state_dict(), "model.pt")` with a TransformerLens 3 `HookedTransformer`,
are pickles: unpickling can run arbitrary code, so they are read only when the caller says
`allow_pickle=True`, and even then only through `torch.load(weights_only=True)`, whose restricted
unpickler builds tensors and plain containers and refuses every other Python object (torch >= 2.6
is required: CVE-2025-32434 let older `weights_only=True` loads run code).

Our parameter names are TransformerLens 3's (`embed.W_E`, `pos_embed.W_pos`,
`blocks.{l}.attn.W_Q`, `blocks.{l}.ln1.w`, `blocks.{l}.mlp.W_in`, `unembed.W_U`, ...), so a TL 3
state dict maps onto our model one to one once TL 3's derived buffers are dropped (causal `mask`,
`IGNORE`, `rotary_sin`/`rotary_cos`; `pos_embed.W_pos` for positional types that do not use it).
TL 3.9 saves an empty `mask` (it builds the causal mask per call), so local attention is
then only in the config, whose `use_local_attn` is refused by name (`model.tl3_keys`).
Anything that does not map exactly (missing or extra weights, other shapes, local attention,
non-zero biases for a `use_bias=False` config) is an error naming it, never a silent partial load.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from inducthead.model import HookedTransformer, HookedTransformerConfig, resolve_config
from inducthead.runs.checkpoint import CheckpointError

MIN_TORCH = (2, 6)
# TL 3 buffers that are functions of the config (recomputed by our model, never loaded).
_TL3_BUFFERS = ("attn.mask", "attn.IGNORE", "attn.rotary_sin", "attn.rotary_cos")
_BIAS_LEAVES = ("b_Q", "b_K", "b_V", "b_O", "b_in", "b_out", "b_U")


def _torch_version() -> tuple[int, int]:
    major, minor = torch.__version__.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def load_pickle(
    path: str | Path,
    config: HookedTransformerConfig | dict | str | None = None,
    *,
    allow_pickle: bool = False,
    device: str | None = None,
):
    """A `HookedTransformer` from a pickle-based state-dict file, read with
    `torch.load(weights_only=True)`; only with `allow_pickle=True`.

    config: the architecture (a HookedTransformerConfig, a TL 3 `cfg.to_dict()`, or a preset
    name). It may be omitted when the file is `{"state_dict": ..., "config": {...}}`.
    Weights are cast to float32. Raises CheckpointError naming the file for anything that is not
    a plain state dict of this architecture.
    """
    path = Path(path)
    if allow_pickle is not True:
        raise CheckpointError(
            f"{path}: refusing to unpickle a file without allow_pickle=True (unpickling can "
            "execute code). Pass allow_pickle=True only for files you trust; they are then read "
            "with torch.load(weights_only=True)."
        )
    if _torch_version() < MIN_TORCH:
        raise CheckpointError(
            f"{path}: loading pickle-based files needs torch >= 2.6 (CVE-2025-32434: older "
            f"weights_only=True loads can execute code); this is torch {torch.__version__}."
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path} holds Python objects other than tensors, which weights_only loading refuses "
            f"({first}). Only plain state dicts load: save model.state_dict() where it was made."
        ) from None
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable torch file ({e}).") from None
    state, file_config = _split(obj, path)
    cfg = _resolve_config(config if config is not None else file_config, path)
    model = HookedTransformer(cfg, init=False)  # weights come from the file
    model.load_state_dict(tl3_to_inducthead(state, model, path))
    model.eval()
    return model.to(device) if device else model


def _split(obj: Any, path: Path) -> tuple[dict[str, Tensor], dict | None]:
    """The state dict and the config dict (if any) held by a loaded file."""
    if _is_state_dict(obj):
        return dict(obj), None
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if _is_state_dict(inner):
                cfg = obj.get("config", obj.get("cfg"))
                return dict(inner), cfg if isinstance(cfg, dict) else None
    raise CheckpointError(
        f"{path} does not hold a state dict (a dict of tensors, or one under 'state_dict'); "
        f"found {type(obj).__name__}."
    )


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def _resolve_config(config: Any, path: Path) -> HookedTransformerConfig:
    if config is None:
        raise CheckpointError(
            f"{path}: a state dict does not record its architecture; pass config= (a "
            "HookedTransformerConfig, a TransformerLens 3 cfg.to_dict(), or a preset name)."
        )
    return resolve_config(config)


def tl3_to_inducthead(state: dict[str, Tensor], model, path: str | Path = "state dict"):
    """Map a TransformerLens 3 `HookedTransformer` state dict onto `model`'s parameter names.

    Drops TL 3's derived buffers after checking that the causal mask is a plain lower-triangular
    one, drops `pos_embed.W_pos` when `model` has no learned positions, drops all-zero biases that
    a `use_bias=False` model lacks, and casts to the model's dtypes. Raises CheckpointError listing
    what is missing, unexpected or of the wrong shape."""
    ours = model.state_dict()
    out: dict[str, Tensor] = {}
    unexpected = []
    for key, value in state.items():
        if key.endswith(_TL3_BUFFERS):
            if key.endswith("attn.mask") and not _is_causal_mask(value):
                raise CheckpointError(
                    f"{path}: {key} is not a plain causal mask (local or windowed attention); "
                    "inducthead models cannot express it."
                )
            continue
        if key not in ours:
            leaf = key.rsplit(".", 1)[-1]
            if key == "pos_embed.W_pos":
                continue  # TL 3 keeps an unused W_pos for e.g. ALiBi models
            if leaf in _BIAS_LEAVES and not model.cfg.use_bias:
                if torch.count_nonzero(value):
                    raise CheckpointError(
                        f"{path}: {key} is non-zero but the config has use_bias=False; load "
                        "with use_bias=True."
                    )
                continue
            unexpected.append(key)
            continue
        out[key] = value
    missing = sorted(set(ours) - set(out))
    wrong = [
        f"{k} {tuple(v.shape)} (model: {tuple(ours[k].shape)})"
        for k, v in out.items()
        if v.shape != ours[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        for label, items in (
            ("missing", missing),
            ("unexpected", sorted(unexpected)),
            ("wrong shape", wrong),
        ):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                parts.append(f"{label}: {', '.join(items[:5])}{more}")
        raise CheckpointError(
            f"{path} does not match the given config ({'; '.join(parts)}). Check that config= "
            "describes the model the file was saved from."
        )
    return {k: v.to(ours[k].dtype) for k, v in out.items()}


def _is_causal_mask(mask: Tensor) -> bool:
    if mask.ndim != 2 or mask.shape[0] != mask.shape[1]:
        return False
    return bool(torch.equal(mask.bool(), torch.ones_like(mask, dtype=torch.bool).tril()))
