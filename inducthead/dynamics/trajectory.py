"""`Trajectory`: a training run's checkpoints as one object to analyse, streamed.

>>> traj = Trajectory("runs/demo")                 # or [files], or a pretrained name / {step: dir}
>>> traj.head_scores()                             # tidy step x layer x head x metric
>>> traj.phase_change()                            # the window from the ICL score's derivative
>>> traj.emergence("prefix_matching", 0.5)         # step, tokens, seconds of the first crossing
>>> traj.weight_pca(); traj.per_token_loss_pca(); traj.essential_dynamics(); traj.llc()

Checkpoints are read one at a time (model tensors only, hash-verified unless `verify=False`) and
dropped before the next is read: at most ~2 models are in memory. Every per-checkpoint result is
cached on disk under the run directory (`RUN/dynamics/cache`, see `dynamics.cache`) keyed by the
checkpoint's content hash and the analysis's parameters; `traj.cache_stats` counts what was
computed and what was reused.
"""

from __future__ import annotations

import warnings
import weakref
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from inducthead._progress import progress_bar
from inducthead.analysis import ModelAdapter, head_label
from inducthead.causal.data import batch_from_tokens, repeated_token_batch
from inducthead.dynamics import measures
from inducthead.dynamics.cache import ResultCache, params_key
from inducthead.dynamics.checkpoints import CheckpointRef
from inducthead.dynamics.curves import CurvesMixin
from inducthead.dynamics.results import HeadScoresResult
from inducthead.dynamics.results_pca import ProgressMeasuresResult
from inducthead.dynamics.sources import FileSource, PretrainedSource, Source, run_source
from inducthead.dynamics.spaces import SpacesMixin
from inducthead.runs import CheckpointError
from inducthead.tasks import Batch

DETECT_PROBE = {"n_samples": 10, "period": 25, "repeats": 4, "seed": 0}


def open_source(
    source, strict: bool, checkpoints=None, checkpoint_values=None, device=None
) -> Source:
    """A `Source` for a run directory, a checkpoint file, a list of files, `{step: HF dir}` or a
    pretrained model name."""
    if isinstance(source, Source):
        return source
    if isinstance(source, dict):
        return PretrainedSource(source, device=device, strict=strict)
    if isinstance(source, (list, tuple)):
        return FileSource([Path(p) for p in source], strict=strict)
    path = Path(str(source)).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        return run_source(path, strict=strict)
    if path.is_file():
        return FileSource([path], strict=strict)
    if path.is_dir():  # a local Hugging Face directory: one checkpoint
        return PretrainedSource({0: path}, device=device, strict=strict)
    if isinstance(source, Path) or str(source).startswith((".", "/", "~")):
        raise FileNotFoundError(f"{source} does not exist.")
    return PretrainedSource(str(source), checkpoints, checkpoint_values, device, strict)


class Trajectory(CurvesMixin, SpacesMixin):
    """Checkpoints of one training run, analysed in a stream (module docstring).

    `source`: a run directory, a checkpoint file or a list of them, a pretrained model name with
    training checkpoints (`checkpoints=` indices or `checkpoint_values=`, e.g. Pythia; needs the
    Hugging Face Hub or its cache) or `{step: local HF directory}`. `strict=True` raises on a
    damaged checkpoint instead of skipping it with a warning. `verify=False` skips the content
    hash check. `cache=False` keeps results in memory only; `cache_dir` puts the cache elsewhere
    (sources that are not run directories have no disk cache unless it is given). `data`
    (a `Batch` or token ids) replaces the evaluation batch: by default the run's own held-out
    batch (what metrics.jsonl's eval_loss was computed on), else `causal.default_data`.
    """

    def __init__(
        self,
        source,
        *,
        checkpoints=None,
        checkpoint_values=None,
        strict=False,
        verify=True,
        cache=True,
        cache_dir=None,
        device=None,
        data=None,
        progress=False,
    ):
        self.source = open_source(source, strict, checkpoints, checkpoint_values, device)
        self.strict, self.verify, self.device, self.progress = strict, verify, device, progress
        root = Path(cache_dir) if cache_dir is not None else None
        if root is None and cache and self.source.path is not None:
            root = self.source.path / "dynamics" / "cache"
        self.cache = ResultCache(root if cache else None)
        self._data = data
        self.live_models = 0  # models alive now; `max_live_models` the most at once
        self.max_live_models = 0
        self.skipped: list[tuple[int, str]] = []
        self._warned: set[str] = set()

    @classmethod
    def compare(cls, sources, **kwargs):
        """Several runs together (`Comparison`): sources are trajectories or what
        `Trajectory(...)` takes (kwargs go to each)."""
        from inducthead.dynamics.compare import Comparison

        return Comparison([s if isinstance(s, Trajectory) else cls(s, **kwargs) for s in sources])

    # ------------------------------------------------------------------ basics
    @property
    def name(self) -> str:
        return self.source.name

    @property
    def refs(self) -> list[CheckpointRef]:
        bad = {s for s, _ in self.skipped}
        return [r for r in self.source.refs if r.step not in bad]

    @property
    def steps(self) -> list[int]:
        return [r.step for r in self.refs]

    @property
    def cache_stats(self):
        return self.cache.stats

    def __len__(self) -> int:
        return len(self.refs)

    def __repr__(self) -> str:
        steps = self.steps
        where = f" at {self.source.path}" if self.source.path else ""
        span = f"steps {steps[0]}-{steps[-1]}" if steps else "none intact"
        return f"Trajectory({self.name!r}{where}: {len(steps)} checkpoints, {span})"

    def load(self, step: int):
        """The model at checkpoint `step`."""
        for ref in self.refs:
            if ref.step == step:
                return self.source.load(ref, self.verify)
        raise ValueError(f"no checkpoint at step {step}; steps: {self.steps}.")

    def models(self, refs=None):
        """`(ref, model)` for each checkpoint, loaded one at a time; damaged ones are skipped
        with a warning naming them (strict: raised)."""
        refs = self.refs if refs is None else refs
        refs = list(refs)
        # no bar when everything is cached (an empty "0it" bar otherwise)
        quiet = not self.progress or not refs
        for ref in progress_bar(refs, desc=f"{self.name}: checkpoints", disable=quiet, leave=False):
            try:
                model = self.source.load(ref, self.verify)
            except CheckpointError as e:
                if self.strict:
                    raise
                self.skipped.append((ref.step, str(e)))
                warnings.warn(f"skipping damaged checkpoint: {e}", stacklevel=3)
                continue
            self.live_models += 1
            self.max_live_models = max(self.max_live_models, self.live_models)
            weakref.finalize(model, self._released)
            yield ref, model
            del model

    def _released(self) -> None:
        self.live_models -= 1

    # ------------------------------------------------------------------ streaming + cache
    def compute(self, jobs: dict, refs=None) -> dict[str, dict[int, dict]]:
        """Run several per-checkpoint analyses in one pass: `jobs` maps an analysis name to
        `(params, fn(adapter) -> values)`; each checkpoint is loaded once, and only if some
        analysis has no cached entry for it. Returns `{analysis: {step: values}}`."""
        refs = self.refs if refs is None else refs
        folders = {a: f"{a}-{params_key(a, p)}" for a, (p, _) in jobs.items()}
        out: dict[str, dict[int, dict]] = {a: {} for a in jobs}
        todo = []
        for ref in refs:
            missing = []
            for a in jobs:
                hit = self.cache.get(a, folders[a], ref.key)
                if hit is None:
                    missing.append(a)
                else:
                    out[a][ref.step] = hit
            if missing:
                todo.append((ref, missing))
        pending = dict((r.key, m) for r, m in todo)
        for ref, model in self.models([r for r, _ in todo]):
            adapter = ModelAdapter.wrap(model)
            for a in pending[ref.key]:
                values = jobs[a][1](adapter)
                self.cache.put(a, folders[a], ref.key, values, ref.step)
                out[a][ref.step] = values
            del adapter
        return out

    def precompute(self, llc: bool = False, **probe) -> None:
        """Fill the cache for the default analyses in one pass over the checkpoints (each loaded
        once): head scores, the evaluation outputs, the per-token-loss and essential-dynamics
        examples, progress measures and, with `llc`, the LLC."""
        from inducthead.dynamics.spaces import _examples_job

        jobs = {"head_scores": self._head_job({**DETECT_PROBE, **probe}), "eval": self._eval_job()}
        jobs.update(_examples_job(self, 512, 0, "loss"))  # per_token_loss_pca's defaults
        jobs.update(_examples_job(self, 256, 0, "loss"))  # essential_dynamics' defaults
        if self._progress_defined():
            jobs["progress"] = ({}, measures.progress_measures)
        self.compute(jobs)
        if llc:
            self.llc()

    def _progress_defined(self) -> bool:
        ref = self.refs[0]
        if ref.config_json is None:
            return True
        import json

        return json.loads(ref.config_json).get("n_layers", 2) >= 2

    # ------------------------------------------------------------------ data
    def _shape(self):
        """What the default data needs from the model (n_ctx, d_vocab, BOS), from a file's
        config when there is one (no model load)."""
        ref = self.refs[0]
        if ref.config_json is not None and isinstance(self.source, FileSource):
            from inducthead.model import HookedTransformerConfig

            c = HookedTransformerConfig.from_json(ref.config_json)
            return SimpleNamespace(
                n_ctx=c.n_ctx, d_vocab=c.d_vocab, bos_token_id=c.bos_token_id, device="cpu"
            )
        return None

    def data_spec(self) -> dict:
        """What the evaluation batch is (part of the cache key)."""
        if self._data is not None:
            tokens = self._data.tokens if isinstance(self._data, Batch) else self._data
            return {"data": "given", "fingerprint": measures.fingerprint(tokens)}
        if self.source.task is not None:
            return {
                "data": "task",
                "task": self.source.task.to_dict(),
                "eval": list(self.source.eval_batch),
            }
        return {"data": "default", "n_samples": 64, "seed": 0}

    def eval_batch(self, adapter=None) -> Batch:
        """The evaluation batch (module docstring), on the CPU."""
        if self._data is not None:
            data = self._data
            return data if isinstance(data, Batch) else batch_from_tokens(data.cpu())
        if self.source.task is not None:
            size, seed = self.source.eval_batch
            return self.source.task.eval_batch(size, seed=seed, device="cpu")
        shape = self._shape() or SimpleNamespace(
            n_ctx=adapter.n_ctx,
            d_vocab=adapter.d_vocab,
            bos_token_id=adapter.bos_token_id,
            device="cpu",
        )
        return repeated_token_batch(shape, n_samples=64, seed=0)

    # ------------------------------------------------------------------ head scores
    def head_scores(
        self,
        metrics=("prefix_matching", "previous_token", "copying_empirical"),
        phase_change: bool = True,
        **probe,
    ) -> HeadScoresResult:
        """`inducthead.detect`'s per-head scores at every checkpoint (`probe`: detect's n_samples,
        period, repeats, seed), as a tidy table; with `phase_change`, the phase-change window
        too (one more forward pass per checkpoint, cached)."""
        probe = {**DETECT_PROBE, **probe}
        metrics = [metrics] if isinstance(metrics, str) else list(metrics)
        by_step = self.compute({"head_scores": self._head_job(probe)})["head_scores"]
        unknown = [m for m in metrics if by_step and m not in next(iter(by_step.values()))]
        if unknown:
            have = [k for k in next(iter(by_step.values())) if not k.startswith("__")]
            raise ValueError(f"unknown metric(s) {unknown}; detect's scores: {', '.join(have)}.")
        tokens, elapsed = self.source.timeline(sorted(by_step))
        times = dict(zip(sorted(by_step), zip(tokens, elapsed, strict=True), strict=True))
        rows, notes = [], []
        for step in sorted(by_step):
            values = by_step[step]
            notes += [n for n in values.get("__notes__", []) if n not in notes]
            for metric in metrics:
                for layer, heads in enumerate(values[metric]):
                    for head, value in enumerate(heads):
                        rows.append(
                            (
                                step,
                                *times[step],
                                layer,
                                head,
                                head_label((layer, head)),
                                metric,
                                value,
                            )
                        )
        for note in notes:
            if note not in self._warned:
                self._warned.add(note)
                warnings.warn(note, stacklevel=2)
        cols = ["step", "tokens", "elapsed_s", "layer", "head", "label", "metric", "value"]
        window = self._window() if phase_change else None
        return HeadScoresResult(
            name=self.name,
            metrics=metrics,
            probe=probe,
            window=window,
            notes=notes,
            data=pd.DataFrame(rows, columns=cols),
        )

    def _head_job(self, probe: dict):
        return (probe, lambda a: measures.head_scores(a, probe))

    # ------------------------------------------------------------------ progress measures
    def progress_measures(self) -> ProgressMeasuresResult:
        """Musat et al. 2025's alpha, beta, gamma per checkpoint and head (PROVISIONAL; see
        `dynamics.measures.progress_measures` for the definitions and what happens without
        learned positions)."""
        by_step = self.compute({"progress": ({}, measures.progress_measures)})["progress"]
        rows, notes = [], []
        for step in sorted(by_step):
            v = by_step[step]
            notes += [n for n in v.get("__notes__", []) if n not in notes]
            for m, layer in (("alpha", 0), ("beta", 1), ("gamma", 1)):
                for h, value in enumerate(v[m]):
                    rows.append((step, m, layer, h, head_label((layer, h)), value))
        return ProgressMeasuresResult(
            name=self.name,
            notes=notes,
            definition=measures.progress_measures.__doc__.split("\n\n")[1],
            data=pd.DataFrame(rows, columns=["step", "measure", "layer", "head", "label", "value"]),
        )
