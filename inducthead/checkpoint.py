"""Checkpoint files: safetensors (weights + optimizer + RNG), atomic writes, verified loads.

A checkpoint is one `.safetensors` file; its metadata holds the step, the model config (so the
file alone rebuilds the model), the optimizer's param groups and a SHA-256 of every tensor, which
`read_checkpoint` verifies. Files are written to a temporary name in the same directory, fsynced
and renamed, so a file under its final name is always complete. No pickle is ever read.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

FORMAT = "inducthead-checkpoint/1"
CHECKPOINT_DIR = "checkpoints"


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt or not ours."""


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}.safetensors"


def checkpoint_schedule(total_steps: int, n: int = 50) -> list[int]:
    """`n` steps in [0, total_steps] (all of them if fewer), log-spaced so they are dense early,
    where induction heads form; always includes 0 and `total_steps`."""
    if total_steps < 0 or n < 2:
        raise ValueError(
            f"checkpoint_schedule needs total_steps >= 0 and n >= 2, got {total_steps}, {n}."
        )
    if total_steps + 1 <= n:
        return list(range(total_steps + 1))
    k = n - 1
    while True:  # rounding merges early grid points: refine the grid until n distinct steps remain
        grid = np.unique(np.round(np.geomspace(1, total_steps, k)).astype(int))
        if len(grid) + 1 >= n:
            return [0, *grid.tolist()]
        k += 1


def tensor_digest(tensors: dict[str, Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of all tensors (order-independent)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that `path` is either the old file or the complete new one."""
    path = Path(path)
    # A unique name in the same directory (so the rename is atomic), created with the umask's
    # permissions like any other file the user writes.
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # persist the rename itself
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass  # some filesystems cannot fsync directories


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, st_save(tensors, metadata=meta))
    return path


def read_checkpoint(
    path: Path | str, verify: bool = True
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and metadata of a checkpoint; CheckpointError naming the file if it is damaged."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist.")
    if path.suffix in (".pt", ".pth", ".bin", ".pkl", ".ckpt"):
        raise CheckpointError(
            f"{path} is a pickle-based file; inducthead reads only .safetensors checkpoints "
            "(pickles can execute code). See inducthead.load_pickle for an explicit opt-in."
        )
    data = path.read_bytes()
    try:
        tensors = st_load(data)
        meta = _metadata(data)
    except (SafetensorError, ValueError, json.JSONDecodeError, OSError) as e:
        raise CheckpointError(f"checkpoint {path} is damaged or truncated ({e}).") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not an inducthead checkpoint (format {meta.get('format')!r})."
        )
    if verify and tensor_digest(tensors) != meta.get("sha256"):
        raise CheckpointError(f"checkpoint {path} is corrupt: its content hash does not match.")
    return tensors, meta


def _metadata(data: bytes) -> dict[str, str]:
    n = int.from_bytes(data[:8], "little")
    if n <= 0 or 8 + n > len(data):
        raise ValueError("bad header length")
    return json.loads(data[8 : 8 + n]).get("__metadata__", {}) or {}


def model_state(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")}


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
