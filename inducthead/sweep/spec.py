"""Sweep specs: reading a spec file and planning its cells (preset x grid point x seed)."""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inducthead import presets
from inducthead.recipe import TrainConfig
from inducthead.runs import sanitize_name  # names never leave the sweep dir
from inducthead.tasks import from_dict as task_from_dict

SECTIONS = ("model", "task", "train")


class SweepError(ValueError):
    """The sweep spec is invalid or its directory cannot be used."""


# ---------------------------------------------------------------------------------- the spec
def read_spec(path: str | Path) -> dict[str, Any]:
    """A spec from a .json file, or a .yaml/.yml file (needs PyYAML)."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"sweep spec {path} does not exist.")
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise SweepError(
                f"{path} is YAML, which needs PyYAML: pip install 'inducthead[ray]' (or pyyaml), "
                "or write the spec as JSON."
            ) from None
        try:
            spec = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise SweepError(f"{path} is not valid YAML ({e}).") from None
    else:
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as e:
            raise SweepError(f"{path} is not valid JSON ({e}).") from None
    if not isinstance(spec, dict):
        raise SweepError(f"{path}: a sweep spec is a mapping (JSON object), got {type(spec)}.")
    return spec


@dataclass
class Cell:
    """One grid point: a preset, a seed and the fields it changes."""

    name: str
    preset: str
    seed: int
    params: dict[str, Any]  # axis -> value shown in the table
    overrides: dict[str, Any]  # "section.field" -> value

    def build(self):
        """(model config, task, train config) of this cell; ValueError naming a bad field."""
        preset = presets.get(self.preset).with_seed(self.seed)
        current = {
            "model": preset.model.to_dict(),
            "task": preset.task,
            "train": preset.train.to_dict(),
        }
        changes: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
        for key, value in self.overrides.items():
            section, _, name = key.partition(".")
            changes[section][name] = _as_number_like(value, current[section].get(name))
        model = preset.model.replace(**changes["model"]) if changes["model"] else preset.model
        task = task_from_dict({**preset.task, **changes["task"]})
        train = TrainConfig.from_dict(
            {**preset.train.to_dict(), "progress": False, **changes["train"]}
        )
        task.check_model(model)
        return model, task, train


# TrainConfig fields that never change the weights a run ends with.
NOT_TRAINED = ("progress", "device", "compile", "cpu_threads", "log_every")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _as_number_like(value: Any, current: Any) -> Any:
    """A numeric string (YAML reads unquoted `1e-3` as one) as a number where the field holds
    a number; everything else unchanged."""
    numeric = isinstance(current, (int, float)) and not isinstance(current, bool)
    if not (numeric and isinstance(value, str) and _NUMBER.fullmatch(value.strip())):
        return value
    number = float(value)
    return int(number) if isinstance(current, int) and number.is_integer() else number


_KNOWN = {"name", "out", "presets", "seeds", "set", "grid", "retries", "threshold"}


def _check_key(key: Any, where: str) -> str:
    if not isinstance(key, str):
        raise SweepError(f"{where}: parameter names are strings like 'train.lr', got {key!r}.")
    section, _, name = key.partition(".")
    if section not in SECTIONS or not name or "." in name:
        raise SweepError(
            f"{where}: parameter {key!r} must be model.FIELD, task.FIELD or train.FIELD."
        )
    if name == "seed":
        raise SweepError(f"{where}: {key!r}: seeds come from the spec's `seeds` list.")
    return key


def _label(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "-".join(_label(v) for v in value)
    return str(value)


def plan(spec: dict[str, Any]) -> list[Cell]:
    """Every cell of the spec, in a stable order; SweepError for a bad spec (checked before
    anything runs: every cell's configs are built once here)."""
    unknown = sorted(set(spec) - _KNOWN)
    if unknown:
        raise SweepError(f"sweep spec: unknown key(s) {unknown}; valid: {sorted(_KNOWN)}.")
    presets = spec.get("presets")
    if isinstance(presets, str):
        presets = [presets]
    if not presets or not all(isinstance(p, str) for p in presets):
        raise SweepError("sweep spec: `presets` must list one or more preset names.")
    seeds = spec.get("seeds", [0])
    if isinstance(seeds, int):
        seeds = [seeds]
    if (
        not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
        or len(set(seeds)) != len(seeds)
    ):
        raise SweepError(f"sweep spec: `seeds` must list distinct integers, got {seeds!r}.")
    fixed = spec.get("set", {}) or {}
    if not isinstance(fixed, dict):
        raise SweepError("sweep spec: `set` maps parameter names to values.")
    for key in fixed:
        _check_key(key, "set")
    grid = spec.get("grid", {}) or {}
    if not isinstance(grid, dict):
        raise SweepError("sweep spec: `grid` maps parameter names (or axis names) to lists.")
    axes: list[tuple[str, list[tuple[str, dict[str, Any]]]]] = []
    for axis, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"grid[{axis!r}] must be a non-empty list of values.")
        points = []
        for value in values:
            if isinstance(value, dict):  # a named axis: several fields per point
                value = dict(value)
                label = value.pop("label", None)
                changes = {_check_key(k, f"grid[{axis!r}]"): v for k, v in value.items()}
                label = (
                    _label(label) if label is not None else "-".join(map(_label, changes.values()))
                )
            else:
                changes = {_check_key(axis, "grid"): value}
                label = _label(value)
            points.append((label, changes))
        axes.append((str(axis), points))
    cells, by_name = [], {}
    for preset in presets:
        for combo in itertools.product(*(points for _, points in axes)):
            for seed in seeds:
                overrides = dict(fixed)
                params = {}
                for (axis, _), (label, changes) in zip(axes, combo, strict=True):
                    overrides.update(changes)
                    params[axis] = label
                parts = [preset, *(f"{a}={v}" for a, v in params.items()), f"seed={seed}"]
                name = sanitize_name(",".join(parts), default="cell")
                if name in by_name:
                    raise SweepError(
                        f"sweep cells {by_name[name]} and {parts} both map to the directory "
                        f"name {name!r}; make the grid values distinct."
                    )
                by_name[name] = parts
                cell = Cell(name, preset, seed, params, overrides)
                try:
                    cell.build()
                except (ValueError, TypeError) as e:
                    raise SweepError(f"sweep cell {name}: {e}") from None
                cells.append(cell)
    return cells
