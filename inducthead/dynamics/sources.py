"""Where a trajectory's checkpoints come from: a run directory of ours, a list of checkpoint files,
or a pretrained model with training checkpoints (Pythia-style `checkpoint_index` /
`checkpoint_value`, through `TransformerBridge.boot_transformers`).

A source lists `CheckpointRef`s from file headers only and loads one model per call; nothing is
kept between calls, so a trajectory holds at most the model it is analysing (and the one being
read). Damaged files are skipped with a warning naming them (`strict=True` raises), files of
different architectures are refused naming both.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np

from inducthead.dynamics.checkpoints import (
    CheckpointRef,
    architecture_key,
    config_difference,
    ref_from_file,
)
from inducthead.runs import CheckpointError, Run, RunDirError, load_pretrained
from inducthead.runs.checkpoint import CHECKPOINT_DIR, read_model_state
from inducthead.runs.files import TEMP_NAME
from inducthead.runs.run import RUN_JSON, checkpoint_steps, model_from_state


class Source:
    """What a trajectory reads: checkpoint refs, models, and the step -> tokens / seconds map."""

    name: str = "trajectory"
    path: Path | None = None  # the run directory, when there is one
    task = None  # the run's task (run directories), else None: default repeated-token data
    eval_batch: tuple[int, int] = (64, 0)  # the run's (eval_batch_size, seed)

    def __init__(self) -> None:
        self.refs: list[CheckpointRef] = []
        self.damaged: list[tuple[str, str]] = []
        self._rows: list[dict] = []

    def load(self, ref: CheckpointRef, verify: bool = True):
        raise NotImplementedError

    def timeline(self, steps) -> tuple[np.ndarray, np.ndarray]:
        """Tokens and training wall seconds at `steps`, linearly interpolated between logged
        evaluations (NaN outside them or without a metrics log)."""
        steps = np.asarray(list(steps), dtype=float)
        rows = [r for r in self._rows if "step" in r]
        out = []
        for key in ("tokens", "elapsed_s"):
            pts = sorted((r["step"], r[key]) for r in rows if r.get(key) is not None)
            if len(pts) < 2:
                out.append(np.full(len(steps), np.nan))
                continue
            xs, ys = (np.array(v, dtype=float) for v in zip(*pts, strict=True))
            out.append(np.interp(steps, xs, ys, left=np.nan, right=np.nan))
        return out[0], out[1]

    def _skip(self, label: str, error: Exception, strict: bool) -> None:
        if strict:
            raise error
        self.damaged.append((label, str(error)))
        warnings.warn(f"skipping damaged checkpoint: {error}", stacklevel=4)

    def check_architectures(self) -> None:
        """ValueError naming two checkpoints of different architectures, if any."""
        first = self.refs[0]
        for ref in self.refs[1:]:
            if ref.architecture != first.architecture:
                raise ValueError(
                    f"checkpoints of different architectures cannot form one trajectory: "
                    f"{first.label} and {ref.label} differ in {config_difference(first, ref)}."
                )


class FileSource(Source):
    """Checkpoint files: a run directory's `checkpoints/`, or any list of files."""

    def __init__(self, files, strict: bool = False, run: Run | None = None):
        super().__init__()
        self.run = run
        for path in files:
            try:
                self.refs.append(ref_from_file(Path(path)))
            except CheckpointError as e:
                self._skip(str(path), e, strict)
        if not self.refs:
            where = f" in {run.path}" if run is not None else ""
            bad = "; ".join(f"{label}: {why}" for label, why in self.damaged)
            raise CheckpointError(f"no intact checkpoint{where} ({bad or 'no files given'}).")
        self.refs.sort(key=lambda r: r.step)
        steps = [r.step for r in self.refs]
        if len(set(steps)) != len(steps):
            dup = sorted({s for s in steps if steps.count(s) > 1})
            raise ValueError(f"several checkpoints claim step(s) {dup}; give one file per step.")
        self.check_architectures()
        if run is None:
            run = _enclosing_run(self.refs[0].path)
        if run is not None:
            self.path, self.name = run.path, run.path.name
            self._rows = run.rows()
            self._use_run(run)
        else:
            self.name = self.refs[0].path.parent.name or "checkpoints"

    def _use_run(self, run: Run) -> None:
        try:
            self.task = run.task
            cfg = run.train_config
            self.eval_batch = (cfg.eval_batch_size, cfg.seed)
        except (ValueError, KeyError, TypeError) as e:
            warnings.warn(
                f"{run.path}/{RUN_JSON}: cannot rebuild the run's task ({e}); analysing on "
                "default repeated-token data instead.",
                stacklevel=4,
            )

    def load(self, ref: CheckpointRef, verify: bool = True):
        state, meta = read_model_state(ref.path, verify=verify)
        if meta["sha256"] != ref.key:
            raise CheckpointError(f"checkpoint {ref.path} changed while the trajectory read it.")
        return model_from_state(meta["config"], state, ref.path, ref.step)


def run_source(path: str | Path, strict: bool = False) -> FileSource:
    """A run directory's checkpoints; errors name what is missing (run.json, the checkpoints/
    folder, any checkpoint file) for an empty or half-written directory."""
    path = Path(path)
    if not path.exists():
        raise RunDirError(f"{path} does not exist.")
    if not path.is_dir():
        raise RunDirError(f"{path} is a file, not a run directory.")
    run = Run(path)  # RunDirError naming run.json when it is missing or not JSON
    folder = path / CHECKPOINT_DIR
    if not folder.is_dir():
        raise RunDirError(
            f"{path} has no {CHECKPOINT_DIR}/ folder (run status {run.status!r}): training has "
            "not written a checkpoint yet."
        )
    steps = checkpoint_steps(path)
    if not steps:
        partial = [p.name for p in folder.iterdir() if TEMP_NAME.match(p.name)]
        extra = (
            f"; {len(partial)} unfinished temporary file(s) from an interrupted write"
            if partial
            else ""
        )
        raise RunDirError(
            f"{folder} holds no step_*.safetensors checkpoint (run status {run.status!r}{extra})."
        )
    return FileSource([run.checkpoint_path(s) for s in steps], strict=strict, run=run)


def _enclosing_run(path: Path | None) -> Run | None:
    """The run directory a checkpoint file sits in (`RUN/checkpoints/step_*.safetensors`)."""
    if path is None or path.parent.name != CHECKPOINT_DIR:
        return None
    root = path.parent.parent
    if not (root / RUN_JSON).is_file():
        return None
    try:
        return Run(root)
    except (RunDirError, ValueError, KeyError):
        return None


class PretrainedSource(Source):
    """A pretrained model's training checkpoints, booted one at a time with
    `inducthead.load_pretrained` (TransformerBridge.boot_transformers with `checkpoint_index` /
    `checkpoint_value`), or local Hugging Face directories given as `{step: directory}`.

    Hub names need the network or the local Hugging Face cache; offline, loading fails with
    `PretrainedLoadError` saying how to get the files."""

    def __init__(
        self,
        name: str | dict,
        checkpoints=None,
        checkpoint_values=None,
        device=None,
        strict: bool = False,
    ):
        super().__init__()
        self.device = device
        if isinstance(name, dict):  # {step: local HF directory}
            self.name = "pretrained"
            for step, directory in sorted(name.items()):
                directory = Path(directory)
                config = directory / "config.json"
                if not config.is_file():
                    self._skip(
                        str(directory), CheckpointError(f"{directory} has no config.json"), strict
                    )
                    continue
                self.refs.append(
                    CheckpointRef(
                        step=int(step),
                        key=_hash_weights(directory),
                        architecture=architecture_key(json.dumps(_arch(config))),
                        label=str(directory),
                        path=directory,
                        config_json=json.dumps(_arch(config)),
                    )
                )
            if not self.refs:
                raise CheckpointError("no loadable pretrained checkpoint directory given.")
            self.check_architectures()
            return
        self.name = str(name)
        if checkpoints is not None and checkpoint_values is not None:
            raise ValueError("give checkpoints= (indices) or checkpoint_values=, not both.")
        labels = _checkpoint_labels(self.name)
        if checkpoint_values is not None:
            pairs = [(int(v), None, int(v)) for v in checkpoint_values]
        else:
            if labels is None and checkpoints is None:
                raise ValueError(
                    f"{self.name!r} has no published checkpoint schedule that TransformerLens "
                    "knows; pass checkpoints= (indices) or checkpoint_values=."
                )
            indices = range(len(labels)) if checkpoints is None else checkpoints
            pairs = [(labels[i] if labels else int(i), int(i), None) for i in indices]
        for step, index, value in pairs:
            tag = f"{self.name}@index={index}" if value is None else f"{self.name}@value={value}"
            self.refs.append(
                CheckpointRef(
                    step=step,
                    key=hashlib.sha256(tag.encode()).hexdigest(),
                    architecture=self.name,
                    label=tag,
                    checkpoint=index,
                    checkpoint_value=value,
                )
            )
        self.refs.sort(key=lambda r: r.step)

    def load(self, ref: CheckpointRef, verify: bool = True):
        if ref.checkpoint is None and ref.checkpoint_value is None:
            model = load_pretrained(ref.path, device=self.device)
        else:
            model = load_pretrained(
                self.name,
                checkpoint=ref.checkpoint,
                checkpoint_value=ref.checkpoint_value,
                device=self.device,
            )
        model.loaded_from = {"path": ref.label, "step": ref.step}
        return model


def _checkpoint_labels(name: str) -> list[int] | None:
    try:
        from transformer_lens.tools.model_registry.checkpoints import get_checkpoint_labels

        labels, _ = get_checkpoint_labels(name)
        return list(labels)
    except Exception:  # noqa: BLE001 - no schedule known (or it needs the network)
        return None


def _arch(config: Path) -> dict:
    """A local HF model's config without the fields that do not define its architecture."""
    cfg = json.loads(config.read_text())
    drop = {"_name_or_path", "transformers_version", "torch_dtype", "dtype", "name_or_path"}
    return {k: v for k, v in cfg.items() if k not in drop}


def _hash_weights(directory: Path) -> str:
    """SHA-256 over a local model's weight files (names and bytes), read in 1 MiB blocks."""
    h = hashlib.sha256()
    files = sorted(
        p for p in directory.iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file()
    )
    for p in files:
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for block in iter(lambda f=f: f.read(1 << 20), b""):
                h.update(block)
    if not files:
        h.update(os.fsencode(str(directory.resolve())))
    return h.hexdigest()
