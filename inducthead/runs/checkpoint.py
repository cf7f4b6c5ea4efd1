"""Checkpoint files: safetensors (weights + optimizer + RNG), verified loads.

A checkpoint is one `.safetensors` file; its metadata holds the step, the model config (so the
file alone rebuilds the model), the optimizer's param groups, a SHA-256 of every tensor and a
SHA-256 of the other metadata entries, which `read_checkpoint` verifies (format /1 files, written
before the metadata hash existed, are checked on their tensors only). Files are written with
`inducthead.runs.files.atomic_write_bytes`, so a file under its final name is always complete.
No pickle is ever read here (`inducthead.runs.pickled.load_pickle` is the explicit opt-in for
`.pt` files).
"""

from __future__ import annotations

import hashlib
import json
import mmap
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from inducthead.runs.files import atomic_write_bytes

FORMAT = "inducthead-checkpoint/2"  # /2 adds meta_sha256, a hash over the other metadata
READABLE_FORMATS = (FORMAT, "inducthead-checkpoint/1")
CHECKPOINT_DIR = "checkpoints"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")
MODEL_PREFIX = "model/"


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt or not ours."""


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}.safetensors"


def tensor_digest(tensors: dict[str, Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of all tensors (order-independent)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        update_digest(h, name, tensors[name])
    return h.hexdigest()


def update_digest(h, name: str, t: Tensor) -> None:
    """Feed one tensor to `tensor_digest`'s hash (callers go through names in sorted order)."""
    t = t.detach().contiguous().cpu()
    h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy())  # the buffer itself: no bytes copy


def meta_digest(meta: dict[str, str]) -> str:
    """SHA-256 over every metadata entry except `meta_sha256` itself."""
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def pack_state(model, optimizer=None) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Flatten model, optimizer and RNG state into tensors plus JSON metadata."""
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    meta: dict[str, str] = {}
    if optimizer is not None:
        state = optimizer.state_dict()
        plain: dict[str, dict[str, Any]] = {}
        for idx, slots in state["state"].items():
            for key, value in slots.items():
                if isinstance(value, Tensor):
                    tensors[f"optim/{idx}/{key}"] = value
                else:
                    plain.setdefault(str(idx), {})[key] = value
        meta["optim_param_groups"] = json.dumps(state["param_groups"])
        meta["optim_plain_state"] = json.dumps(plain)
    tensors["rng/torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda{i}"] = s
    return {k: v.detach().contiguous().cpu() for k, v in tensors.items()}, meta


def write_checkpoint(
    path: Path, model, optimizer=None, step: int = 0, extra: dict[str, Any] | None = None
) -> Path:
    """Atomically write model (+ optimizer + RNG) state at `step` to `path`."""
    tensors, meta = pack_state(model, optimizer)
    meta.update(
        format=FORMAT,
        step=str(int(step)),
        config=model.cfg.to_json(),
        config_hash=model.cfg.hash(),
        sha256=tensor_digest(tensors),
        extra=json.dumps(extra or {}),
    )
    meta["meta_sha256"] = meta_digest(meta)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, st_save(tensors, metadata=meta))
    return path


def read_checkpoint(
    path: Path | str, verify: bool = True
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and metadata of a checkpoint; CheckpointError naming the file if it is damaged.

    Never unpickles: a pickle-based file (by suffix or by its first bytes) is refused."""
    path = Path(path)
    _refuse_unreadable(path)
    data = path.read_bytes()
    try:
        tensors = st_load(data)
        meta = _metadata(data)
    except Exception as e:  # any parse failure of untrusted bytes is "damaged", never a crash
        raise _unparsable(path, data[:8], e) from None
    check_meta(path, meta, verify)
    if verify and tensor_digest(tensors) != meta.get("sha256"):
        raise CheckpointError(f"checkpoint {path} is corrupt: its content hash does not match.")
    return tensors, meta


def read_meta(path: str | Path, verify: bool = True) -> dict[str, str]:
    """A checkpoint's metadata from its header alone (step, config, content hash), checked as
    `read_checkpoint` checks it; the tensors are not read."""
    path = Path(path)
    with _open_lazily(path) as f:
        meta = f.metadata() or {}
    check_meta(path, meta, verify)
    return meta


def read_model_state(
    path: str | Path, verify: bool = True
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """`({name: tensor}, metadata)` of the model tensors only (names without `model/`): the file
    is memory-mapped (`safetensors.safe_open`) and the optimizer and RNG tensors are never
    materialised, except that `verify` streams them past `tensor_digest`'s hash one at a time
    (peak memory: the model plus one tensor). CheckpointError naming the file on any damage."""
    path = Path(path)
    meta = read_meta(path, verify)
    state: dict[str, Tensor] = {}
    try:
        if verify and _mapped_digest(path) != meta["sha256"]:
            raise CheckpointError(f"checkpoint {path} is corrupt: its content hash does not match.")
        with _open_lazily(path) as f:
            for name in sorted(k for k in f.keys() if k.startswith(MODEL_PREFIX)):  # noqa: SIM118
                state[name[len(MODEL_PREFIX) :]] = f.get_tensor(name)
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - a truncated data section fails here
        raise CheckpointError(f"checkpoint {path} is damaged or truncated ({e}).") from None
    if not state:
        raise CheckpointError(f"checkpoint {path} holds no model tensors.")
    return state, meta


# safetensors' dtype names -> torch's, as `tensor_digest` writes them
_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _mapped_digest(path: Path) -> str:
    """`tensor_digest` of a file's tensors, read straight from its memory-mapped bytes: no
    tensor is materialised, so verifying costs no memory beyond the page cache (safetensors
    stores each tensor's bytes contiguously, as `tensor_digest` hashes them)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        view = memoryview(mm)
        try:
            n = int.from_bytes(view[:8], "little")
            header = json.loads(bytes(view[8 : 8 + n]))
            for name in sorted(k for k in header if k != "__metadata__"):
                info = header[name]
                start, end = info["data_offsets"]
                if 8 + n + end > len(view):
                    raise ValueError(f"tensor {name!r} runs past the end of the file")
                dtype = _DTYPES[info["dtype"]]
                h.update(f"{name}|{dtype}|{tuple(info['shape'])}|".encode())
                h.update(view[8 + n + start : 8 + n + end])
        finally:
            view.release()
    return h.hexdigest()


def check_meta(path: Path, meta: dict[str, str], verify: bool = True) -> None:
    """CheckpointError naming `path` unless `meta` is a readable inducthead checkpoint's
    metadata (format, step, config, content hash) whose own hash matches (with `verify`)."""
    if meta.get("format") not in READABLE_FORMATS:
        raise CheckpointError(
            f"{path} is not an inducthead checkpoint (format {meta.get('format')!r})."
        )
    for key in ("step", "config", "sha256"):
        if key not in meta:
            raise CheckpointError(f"checkpoint {path} is damaged: its metadata has no {key!r}.")
    if verify:
        if meta["format"] == FORMAT and "meta_sha256" not in meta:
            raise CheckpointError(f"checkpoint {path} is corrupt: its metadata hash is missing.")
        if "meta_sha256" in meta and meta_digest(meta) != meta["meta_sha256"]:
            raise CheckpointError(
                f"checkpoint {path} is corrupt: its metadata hash does not match."
            )


def _refuse_unreadable(path: Path) -> None:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist.")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path} is a pickle-based file; inducthead reads only .safetensors checkpoints "
            "(unpickling can execute code). If you trust it, load it explicitly with "
            "inducthead.load_pickle(path, config, allow_pickle=True)."
        )


def _unparsable(path: Path, head: bytes, error: Exception) -> CheckpointError:
    """The error for a file safetensors cannot parse, saying what it looks like instead."""
    if looks_like_pickle(head):
        return CheckpointError(
            f"{path} is not a safetensors file: it looks like a pickle-based torch file, "
            "which inducthead never unpickles implicitly. If you trust it, use "
            "inducthead.load_pickle(path, config, allow_pickle=True)."
        )
    if path.suffix.lower() != ".safetensors":  # a text file, an image, ...: say so
        return CheckpointError(
            f"{path} is not a checkpoint: inducthead reads run directories and the "
            ".safetensors files in their checkpoints/ folder."
        )
    return CheckpointError(f"checkpoint {path} is damaged or truncated ({error}).")


def _open_lazily(path: Path):
    """`safetensors.safe_open` (memory-mapped), with `read_checkpoint`'s refusals and errors."""
    from safetensors import safe_open  # looked up per call: tests spy on it

    _refuse_unreadable(path)
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except Exception as e:  # noqa: BLE001 - untrusted bytes: every parse failure is "damaged"
        with open(path, "rb") as f:
            head = f.read(8)
        raise _unparsable(path, head, e) from None


def looks_like_pickle(data: bytes) -> bool:
    """True for the first bytes of a torch zip archive or a raw pickle (protocol 2 to 5)."""
    return data[:4] == b"PK\x03\x04" or (
        len(data) > 2 and data[0] == 0x80 and 2 <= data[1] <= 5 and data[2] != 0
    )


def _metadata(data: bytes) -> dict[str, str]:
    n = int.from_bytes(data[:8], "little")
    if n <= 0 or 8 + n > len(data):
        raise ValueError("bad header length")
    header = json.loads(data[8 : 8 + n])
    meta = header.get("__metadata__", {}) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ValueError("metadata is not a string map")
    return meta


def model_state(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k[len(MODEL_PREFIX) :]: v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)}


def restore_optimizer(optimizer, tensors: dict[str, Tensor], meta: dict[str, str]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, idx, slot = key.split("/", 2)
            state.setdefault(int(idx), {})[slot] = value
    for idx, slots in json.loads(meta.get("optim_plain_state", "{}")).items():
        state.setdefault(int(idx), {}).update(slots)
    groups = json.loads(meta["optim_param_groups"])
    for group in groups:  # JSON turns tuples into lists; AdamW's betas is a tuple
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def restore_rng(tensors: dict[str, Tensor]) -> None:
    torch.set_rng_state(tensors["rng/torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng/cuda")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
