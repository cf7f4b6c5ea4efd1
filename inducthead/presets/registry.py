"""The preset registry: `Preset` (model config + task + training recipe) and get / list /
register / resolve / table. The families (`presets.demo`, `presets.olsson`, and the paper
reproductions) register theirs on import."""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from typing import Any

from inducthead.model import HookedTransformerConfig, resolve_config
from inducthead.model.config import register_name
from inducthead.recipe import TrainConfig
from inducthead.tasks import Task, from_dict


@dataclass(frozen=True)
class Preset:
    """A reproducible experiment: architecture, task and training recipe, with its source."""

    name: str
    model: HookedTransformerConfig
    task: dict[str, Any]
    train: TrainConfig
    description: str
    source: str = ""
    notes: builtins.list[str] = field(default_factory=builtins.list)

    def make_task(self) -> Task:
        return from_dict(self.task)

    def with_seed(self, seed: int) -> Preset:
        """The same preset with model init and data seeded by `seed`."""
        return Preset(
            self.name,
            self.model.replace(seed=seed),
            self.task,
            self.train.replace(seed=seed),
            self.description,
            self.source,
            self.notes,
        )

    def __repr__(self) -> str:
        m = self.model
        return (
            f"Preset({self.name!r}: {m.n_layers}L {m.n_heads}H d_model {m.d_model}, "
            f"{m.positional_embedding_type} positions, task {self.task['name']}, "
            f"{self.train.steps} steps x batch {self.train.batch_size})"
        )


_PRESETS: dict[str, Preset] = {}


def list() -> builtins.list[str]:  # noqa: A001 - shadows the builtin on purpose (presets.list())
    """Names of all presets."""
    return builtins.list(_PRESETS)


def get(name: str) -> Preset:
    """The preset called `name`; ValueError listing the available ones otherwise."""
    if name not in _PRESETS:
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(_PRESETS)}.")
    return _PRESETS[name]


def resolve(spec) -> HookedTransformerConfig:
    """A model config from a HookedTransformerConfig, a config dict (ours or TransformerLens 3's
    `cfg.to_dict()`), a preset name or a `Preset`; TypeError otherwise."""
    return resolve_config(spec)


def register(preset: Preset, overwrite: bool = False) -> None:
    """Add a preset (paper reproductions register theirs here)."""
    if preset.name in _PRESETS and not overwrite:
        raise ValueError(
            f"a preset named {preset.name!r} exists; pass overwrite=True to replace it."
        )
    _PRESETS[preset.name] = preset
    register_name(preset.name, lambda: preset.model)


def table() -> str:
    """One line per preset, for `inducthead configs`."""
    width = max(len(n) for n in _PRESETS)
    return "\n".join(f"{n:<{width}}  {p.description}" for n, p in _PRESETS.items())
