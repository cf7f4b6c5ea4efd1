"""The on-disk results cache of a trajectory: one small JSON file per (analysis, checkpoint).

    RUN/dynamics/cache/<analysis>-<params hash>/<checkpoint content hash>.json

The folder name hashes the analysis's parameters (probe, data, seeds, settings) and
`CACHE_VERSION`; the file name is the checkpoint's content hash (the SHA-256 its header records).
So a second call computes nothing, a longer run computes only its new checkpoints, and a
retrained checkpoint (new content, same step) is recomputed. Files are written atomically; an
unreadable entry is recomputed. `CacheStats` counts what was computed and what was reused (the
tests assert on it).
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

from inducthead.runs import safe_child, sanitize_name
from inducthead.runs.files import atomic_write_text

CACHE_VERSION = 1  # bump when a cached quantity's definition changes


class CacheStats:
    """`computed[analysis]` and `reused[analysis]`: checkpoints computed / read from the cache."""

    def __init__(self) -> None:
        self.computed: Counter[str] = Counter()
        self.reused: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"CacheStats(computed={dict(self.computed)}, reused={dict(self.reused)})"


def params_key(analysis: str, params: dict[str, Any]) -> str:
    text = json.dumps({"v": CACHE_VERSION, "analysis": analysis, **params}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _encode(value):
    if isinstance(value, float) and not math.isfinite(value):
        return {"__float__": repr(value)}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _decode(value):
    if isinstance(value, dict):
        if set(value) == {"__float__"}:
            return float(value["__float__"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


class ResultCache:
    """Per-checkpoint results in memory and, when `root` is given, on disk."""

    def __init__(self, root: Path | None, stats: CacheStats | None = None):
        self.root = Path(root) if root is not None else None
        self.stats = stats or CacheStats()
        self._memory: dict[tuple[str, str], dict] = {}
        self._warned = False

    def _file(self, folder: str, key: str) -> Path | None:
        if self.root is None:
            return None
        return safe_child(self.root, sanitize_name(folder), f"{key}.json", what="cache entry")

    def get(self, analysis: str, folder: str, key: str) -> dict | None:
        hit = self._memory.get((folder, key))
        if hit is None and (path := self._file(folder, key)) is not None and path.is_file():
            try:
                hit = _decode(json.loads(path.read_text()))["values"]
            except (OSError, ValueError, KeyError, TypeError):
                hit = None  # a damaged entry is recomputed
            if hit is not None:
                self._memory[(folder, key)] = hit
        if hit is not None:
            self.stats.reused[analysis] += 1
        return hit

    def put(self, analysis: str, folder: str, key: str, values: dict, step: int) -> None:
        self.stats.computed[analysis] += 1
        self._memory[(folder, key)] = values
        path = self._file(folder, key)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            entry = {"analysis": analysis, "step": step, "values": values}
            atomic_write_text(path, json.dumps(_encode(entry)))
        except OSError as e:
            if not self._warned:
                self._warned = True
                warnings.warn(
                    f"cannot write the dynamics cache under {self.root} ({e}); results are kept "
                    "in memory only (pass cache_dir= to put them elsewhere).",
                    stacklevel=3,
                )
