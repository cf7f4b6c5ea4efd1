"""Presets as JSON files: a custom model, task and recipe for `inducthead train --config FILE.json`.

A file holds `model`, `task` and `train` (each the dict `to_dict()` writes) and, optionally,
`base`: a preset whose three parts the file's dicts then update key by key, so a file may say
only what differs. `inducthead configs NAME --json` prints a complete file to start from.

    {"base": "demo", "name": "demo-4heads", "model": {"n_heads": 4}, "train": {"steps": 500}}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from inducthead.model import HookedTransformerConfig
from inducthead.presets.registry import Preset, get
from inducthead.recipe import TrainConfig
from inducthead.tasks import from_dict as task_from_dict

__all__ = ["from_file", "to_json", "looks_like_file"]

_KEYS = {"base", "name", "description", "source", "notes", "model", "task", "train"}


def looks_like_file(spec: str) -> bool:
    """Whether a `--config` value names a file rather than a preset."""
    return spec.endswith(".json") or "/" in spec or Path(spec).is_file()


def to_json(preset: Preset) -> str:
    """`preset` as a complete config file (`from_file` reads it back to an equal preset). The
    model's name is left to `name` when they agree, so renaming the file's preset renames both."""
    model = preset.model.to_dict()
    if model["model_name"] == preset.name:
        del model["model_name"]
    d = {
        "name": preset.name,
        "description": preset.description,
        "source": preset.source,
        "notes": list(preset.notes),
        "model": model,
        "task": dict(preset.task),
        "train": preset.train.to_dict(),
    }
    return json.dumps(d, indent=2)


def from_file(path) -> Preset:
    """The preset a JSON config file describes (module docstring); ValueError naming the file
    and what is wrong (not JSON, unknown keys, a missing part, a bad field) otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"config file {path} does not exist; pass a preset name (inducthead configs) or a "
            "JSON file (start from `inducthead configs demo --json > my.json`)."
        )
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"config file {path} is not valid JSON: {e}.") from None
    if not isinstance(d, dict):
        raise ValueError(f"config file {path} must hold a JSON object, got {type(d).__name__}.")
    unknown = sorted(set(d) - _KEYS)
    if unknown:
        raise ValueError(f"config file {path}: unknown key(s) {unknown}; valid: {sorted(_KEYS)}.")
    try:
        return _preset(d, path)
    except (TypeError, ValueError) as e:
        raise ValueError(f"config file {path}: {e}") from None


def _preset(d: dict[str, Any], path: Path) -> Preset:
    base = get(d["base"]) if "base" in d else None
    parts = {}
    for key in ("model", "task", "train"):
        value = d.get(key, {} if base else None)
        if value is None:
            raise ValueError(f"no {key!r} part (and no 'base' preset to take it from).")
        if not isinstance(value, dict):
            raise ValueError(f"{key!r} must be a JSON object, got {type(value).__name__}.")
        parts[key] = value
    if base is not None:
        parts["model"] = {**base.model.to_dict(), **parts["model"]}
        # a different task name replaces the base task instead of merging unrelated fields
        same_task = parts["task"].get("name", base.task["name"]) == base.task["name"]
        parts["task"] = {**base.task, **parts["task"]} if same_task else parts["task"]
        parts["train"] = {**base.train.to_dict(), **parts["train"]}
    name = d.get("name") or path.stem
    model = HookedTransformerConfig.from_dict(parts["model"])
    if model.model_name in ("custom", base.model.model_name if base else "custom"):
        model = model.replace(model_name=name)
    return Preset(
        name,
        model,
        task_from_dict(parts["task"]).to_dict(),  # validated and normalised
        TrainConfig.from_dict(parts["train"]),
        d.get("description") or f"from {path.name}" + (f" (based on {base.name})" if base else ""),
        d.get("source", base.source if base else ""),
        list(d.get("notes", [])),
    )
