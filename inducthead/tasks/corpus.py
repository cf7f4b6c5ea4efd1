"""Byte-level language modelling on text files (default: the Python standard library's sources)."""

from __future__ import annotations

import glob
import hashlib
import os
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from inducthead.tasks.base import Batch, Task, generator

N_BYTES = 256
_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__"}


def stdlib_files() -> list[Path]:
    """The running interpreter's standard-library .py files (offline, real text, many repeats)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        found += [Path(dirpath, f) for f in filenames if f.endswith(".py")]
    return sorted(found)


def resolve_paths(paths: tuple[str, ...]) -> list[Path]:
    """Files named by `paths`: files, directories (all files below) or glob patterns. Sorted."""
    if not paths:
        return stdlib_files()
    files: set[Path] = set()
    for spec in paths:
        matches = glob.glob(os.path.expanduser(spec), recursive=True) or [spec]
        for m in map(Path, matches):
            if m.is_dir():
                files.update(f for f in m.rglob("*") if f.is_file())
            elif m.is_file():
                files.add(m)
            else:
                raise FileNotFoundError(f"Corpus: {spec!r} matches no file or directory.")
    return sorted(files)


@dataclass
class Corpus(Task):
    """Random windows of bytes from text files; token id = byte value, BOS = 256 (`bos=True`).

    Files are read in sorted order and concatenated; the last `val_fraction` of the bytes is held
    out for `eval_batch`. `fingerprint` (SHA-256 of names and contents) is recorded in run.json
    (`task_info`): a resume refuses to continue on files whose fingerprint changed.
    """

    name = "corpus"
    paths: tuple[str, ...] = ()
    seq_len: int = 128
    bos: bool = True
    max_bytes: int | None = None
    val_fraction: float = 0.05
    _data: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)
    _info: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)
    _by_device: dict[str, torch.Tensor] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        self.paths = tuple(str(p) for p in self.paths)
        if self.seq_len < 1:
            raise ValueError(f"Corpus.seq_len must be >= 1, got {self.seq_len}.")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"Corpus.val_fraction must lie in (0, 1), got {self.val_fraction}.")

    @property
    def d_vocab(self) -> int:
        return N_BYTES + self.bos

    @property
    def bos_token_id(self) -> int | None:
        return N_BYTES if self.bos else None

    def _load(self) -> torch.Tensor:
        if self._data is None:
            files = resolve_paths(self.paths)
            digest, chunks, total = hashlib.sha256(), [], 0
            for f in files:
                raw = f.read_bytes()
                if self.max_bytes is not None:
                    raw = raw[: self.max_bytes - total]
                digest.update(str(f.name).encode() + b"\0" + raw)
                chunks.append(raw)
                total += len(raw)
                if self.max_bytes is not None and total >= self.max_bytes:
                    break
            data = b"\n".join(chunks)
            if len(data) < 2 * (self.seq_len + 1):
                raise ValueError(
                    f"Corpus: only {len(data)} bytes in {len(files)} file(s); need at least "
                    f"{2 * (self.seq_len + 1)} for one training and one evaluation window."
                )
            self._data = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            self._info = {
                "n_files": len(chunks),
                "n_bytes": len(data),
                "fingerprint": digest.hexdigest(),
            }
        return self._data

    def describe(self) -> dict[str, Any]:
        """Files, size and content fingerprint (stored in run.json)."""
        self._load()
        return dict(self._info)

    def _on(self, device) -> torch.Tensor:
        key = str(device)
        if key not in self._by_device:
            self._by_device[key] = self._load().to(device)
        return self._by_device[key]

    def _windows(self, batch_size: int, seed: int, device, lo: int, hi: int) -> Batch:
        data = self._on(device)
        n = self.seq_len + 1 - self.bos  # bytes per window (BOS takes one input slot)
        g = generator(seed, device)
        starts = lo + (torch.rand(batch_size, generator=g, device=device) * (hi - lo - n)).long()
        window = data[starts[:, None] + torch.arange(n, device=device)].long()
        if self.bos:
            bos = torch.full((batch_size, 1), N_BYTES, device=device, dtype=torch.long)
            window = torch.cat([bos, window], dim=1)
        tokens, targets = window[:, :-1], window[:, 1:]
        return Batch(tokens, targets, torch.ones_like(tokens, dtype=torch.bool))

    def _split(self) -> int:
        return int(len(self._load()) * (1 - self.val_fraction))

    def sample(self, batch_size: int, seed: int = 0, device="cpu") -> Batch:
        return self._windows(batch_size, seed, device, 0, self._split())

    def eval_batch(self, batch_size: int, seed: int = 0, device="cpu") -> Batch:
        split = self._split()
        if len(self._load()) - split < self.seq_len + 2:
            split = 0  # tiny corpora: evaluate on all of it rather than fail
        return self._windows(batch_size, seed + 10**9, device, split, len(self._load()))
