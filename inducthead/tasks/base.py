"""What every task generator returns and how tasks are named, saved and rebuilt."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

_REGISTRY: dict[str, type[Task]] = {}


@dataclass
class Batch:
    """`tokens` `[batch, pos]` are the model input; `targets[b, i]` is the token to predict at
    position i; `mask[b, i]` says whether position i counts in the loss."""

    tokens: Tensor
    targets: Tensor
    mask: Tensor
    info: dict[str, Tensor] = field(default_factory=dict)  # per-sequence facts, e.g. the period

    def to(self, device: torch.device | str) -> Batch:
        info = {k: v.to(device) for k, v in self.info.items()}
        return Batch(self.tokens.to(device), self.targets.to(device), self.mask.to(device), info)

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __repr__(self) -> str:
        b, p = self.tokens.shape
        return f"Batch({b} x {p} tokens, {int(self.mask.sum())} scored targets)"


def generator(seed: int, device: torch.device | str) -> torch.Generator:
    """A fresh generator on `device`: a batch is a pure function of (seed, device type)."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed) % (2**63))
    return g


class Task:
    """A task generator. Subclasses are dataclasses whose fields fully describe the data.

    `sample(batch_size, seed, device)` is deterministic in `seed`: the trainer derives one seed per
    step, so resuming or re-running a step reproduces its batch without any saved generator
    state, and data is generated directly on the model's device.
    """

    name: ClassVar[str] = ""
    d_vocab: int
    seq_len: int
    bos_token_id: int | None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            _REGISTRY[cls.name] = cls

    def sample(self, batch_size: int, seed: int = 0, device: torch.device | str = "cpu") -> Batch:
        raise NotImplementedError

    def eval_batch(
        self, batch_size: int, seed: int = 0, device: torch.device | str = "cpu"
    ) -> Batch:
        """Held-out evaluation data (default: fresh samples from a separate seed stream)."""
        return self.sample(batch_size, seed=seed + 10**9, device=device)

    def to_dict(self) -> dict[str, Any]:
        d = {"name": self.name}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.init:
                value = getattr(self, f.name)
                d[f.name] = list(value) if isinstance(value, tuple) else value
        return d

    def check_model(self, cfg) -> None:
        """Raise ValueError if a model with config `cfg` cannot be trained on this task."""
        if cfg.d_vocab < self.d_vocab:
            raise ValueError(
                f"{type(self).__name__} uses token ids up to {self.d_vocab - 1} but the model's "
                f"d_vocab is {cfg.d_vocab}; set d_vocab >= {self.d_vocab}."
            )
        if cfg.d_vocab_out < self.d_vocab:
            raise ValueError(
                f"{type(self).__name__} predicts token ids up to {self.d_vocab - 1} but the "
                f"model's d_vocab_out is {cfg.d_vocab_out}; set d_vocab_out >= {self.d_vocab}."
            )
        if cfg.n_ctx < self.seq_len:
            raise ValueError(
                f"{type(self).__name__} makes sequences of {self.seq_len} tokens but the model's "
                f"n_ctx is {cfg.n_ctx}; lower seq_len or raise n_ctx."
            )


def from_dict(d: dict[str, Any]) -> Task:
    """Rebuild a task from `task.to_dict()` (as stored in run.json)."""
    d = dict(d)
    name = d.pop("name", None)
    if name not in _REGISTRY:
        raise ValueError(f"unknown task {name!r}; available: {sorted(_REGISTRY)}.")
    cls = _REGISTRY[name]
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ValueError(f"task {name!r}: unknown field(s) {unknown}; valid: {sorted(fields)}.")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def available() -> list[str]:
    return sorted(_REGISTRY)
