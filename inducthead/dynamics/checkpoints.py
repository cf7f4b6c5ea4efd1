"""Reading checkpoints for analysis: only the model tensors, verified as they stream past.

`read_model_state(path)` opens a checkpoint with `safetensors.safe_open` (memory-mapped) and
materialises only the `model/*` tensors; the optimizer moments and RNG state are never loaded.
With `verify=True` (the default) the file's content hash is still checked: the SHA-256 that
`inducthead.runs.checkpoint.tensor_digest` defines is computed over every tensor, one tensor at a
time (so peak memory is the model plus one optimizer tensor), together with the metadata hash.
`read_meta(path)` reads the header only (step, config, content hash) and is what a trajectory
lists its checkpoints with.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from inducthead.model import HookedTransformer, HookedTransformerConfig
from inducthead.runs.checkpoint import FORMAT as CURRENT_FORMAT
from inducthead.runs.checkpoint import (
    PICKLE_SUFFIXES,
    READABLE_FORMATS,
    CheckpointError,
    looks_like_pickle,
    meta_digest,
)

MODEL_PREFIX = "model/"
# Config fields that do not change the architecture (checkpoints differing only here can be mixed)
NOT_ARCHITECTURE = ("seed", "model_name", "init_weights", "initializer_range", "embed_init_std")


def architecture_key(config_json: str) -> str:
    """A hash of the config fields that define the architecture (not seed, name or init)."""
    cfg = {k: v for k, v in json.loads(config_json).items() if k not in NOT_ARCHITECTURE}
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CheckpointRef:
    """One checkpoint of a trajectory: where it is and what it claims to be (from its header).

    `key` is the content hash the results cache is keyed by (the file's SHA-256 over its tensors;
    for pretrained checkpoints, a hash of the model name and revision)."""

    step: int
    key: str
    architecture: str  # `architecture_key` of its config
    label: str  # file path, or "name@revision"
    path: Path | None = None
    config_json: str | None = None
    checkpoint: int | None = None  # pretrained: checkpoint_index
    checkpoint_value: int | None = None  # pretrained: checkpoint_value


def _open(path: Path):
    from safetensors import safe_open

    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist.")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path} is a pickle-based file; inducthead reads only .safetensors checkpoints "
            "(unpickling can execute code)."
        )
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except Exception as e:  # noqa: BLE001 - untrusted bytes: every parse failure is "damaged"
        with open(path, "rb") as f:
            head = f.read(8)
        if looks_like_pickle(head):
            raise CheckpointError(
                f"{path} is not a safetensors file: it looks like a pickle-based torch file, "
                "which inducthead never unpickles implicitly."
            ) from None
        raise CheckpointError(f"checkpoint {path} is damaged or truncated ({e}).") from None


def read_meta(path: str | Path) -> dict[str, str]:
    """The checkpoint's metadata (header only); CheckpointError naming the file if it is not a
    readable inducthead checkpoint or its metadata hash does not match."""
    path = Path(path)
    with _open(path) as f:
        meta = f.metadata() or {}
    if meta.get("format") not in READABLE_FORMATS:
        raise CheckpointError(
            f"{path} is not an inducthead checkpoint (format {meta.get('format')!r})."
        )
    for key in ("step", "config", "sha256"):
        if key not in meta:
            raise CheckpointError(f"checkpoint {path} is damaged: its metadata has no {key!r}.")
    if meta["format"] == CURRENT_FORMAT and "meta_sha256" not in meta:
        raise CheckpointError(f"checkpoint {path} is corrupt: its metadata hash is missing.")
    if "meta_sha256" in meta and meta_digest(meta) != meta["meta_sha256"]:
        raise CheckpointError(f"checkpoint {path} is corrupt: its metadata hash does not match.")
    return meta


def read_model_state(
    path: str | Path, verify: bool = True
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """`({name: tensor}, metadata)` of the model tensors only (names without the `model/`
    prefix). With `verify`, the content hash over all tensors is checked on the way (one tensor
    in memory at a time besides the model's); CheckpointError naming the file on any damage."""
    path = Path(path)
    meta = read_meta(path)
    state: dict[str, Tensor] = {}
    h = hashlib.sha256()
    try:
        with _open(path) as f:
            for name in sorted(f.keys()):
                is_model = name.startswith(MODEL_PREFIX)
                if not (verify or is_model):
                    continue  # the optimizer and RNG state are never read
                t = f.get_tensor(name)
                if verify:
                    t = t.contiguous()
                    h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
                    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
                if is_model:
                    state[name[len(MODEL_PREFIX) :]] = t
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - a truncated data section fails here
        raise CheckpointError(f"checkpoint {path} is damaged or truncated ({e}).") from None
    if verify and h.hexdigest() != meta["sha256"]:
        raise CheckpointError(f"checkpoint {path} is corrupt: its content hash does not match.")
    if not state:
        raise CheckpointError(f"checkpoint {path} holds no model tensors.")
    return state, meta


def model_from_state(
    config_json: str, state: dict[str, Tensor], path: Path | str, step: int
) -> HookedTransformer:
    """Our `HookedTransformer` from a config and its model tensors, in eval mode, recording the
    file it came from (`loaded_from`, which results report as their source)."""
    cfg = HookedTransformerConfig.from_json(config_json)
    model = HookedTransformer(cfg, init=False)
    model.load_state_dict(state)
    model.eval()
    model.loaded_from = {"path": str(path), "step": int(step)}
    return model


def ref_from_file(path: Path, step: int | None = None) -> CheckpointRef:
    """A `CheckpointRef` from a checkpoint file's header (CheckpointError if it is damaged)."""
    meta = read_meta(path)
    return CheckpointRef(
        step=int(meta["step"]) if step is None else int(step),
        key=meta["sha256"],
        architecture=architecture_key(meta["config"]),
        label=str(path),
        path=Path(path),
        config_json=meta["config"],
    )


def config_difference(a: CheckpointRef, b: CheckpointRef) -> str:
    """The config fields in which two checkpoints differ, e.g. "d_model 64 vs 128"."""
    try:
        da, db = json.loads(a.config_json or "{}"), json.loads(b.config_json or "{}")
    except json.JSONDecodeError:
        return "their configs"
    keys = [k for k in sorted(set(da) | set(db)) if k not in NOT_ARCHITECTURE]
    diffs = [f"{k} {da.get(k)!r} vs {db.get(k)!r}" for k in keys if da.get(k) != db.get(k)]
    return ", ".join(diffs[:6]) or "their configs"
