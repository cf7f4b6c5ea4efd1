"""The checkpoints of a trajectory: `CheckpointRef` (what a file's header says it is), read
with `inducthead.runs.checkpoint.read_meta` (header only) and, for analysis,
`read_model_state` (only the `model/*` tensors materialised, the content hash still verified
one tensor at a time); architecture keys, so checkpoints of different models are never mixed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from inducthead.runs.checkpoint import read_meta

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
