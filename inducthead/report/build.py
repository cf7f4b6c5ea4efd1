"""`collect_report(run_dir)` gathers a run's report section by section; `build_report` writes it.

Each section is computed on its own: what it cannot compute (no checkpoint yet, no metrics, an
analysis that fails on this model) becomes a visible 'missing' line in that section and in the
list at the top, so a half-written run still gets a report of what exists. Warnings raised while
a section is computed are shown under it."""

from __future__ import annotations

import warnings
from pathlib import Path

from inducthead._progress import progress_bar
from inducthead.report import sections_model as sm
from inducthead.report import sections_run as sr
from inducthead.report.document import RunReport, Section
from inducthead.runs import Run, RunDirError

REPORT_NAME = "report.html"
RUN_DIR_HOLDS = (
    "A run directory holds run.json (model, task and training configs, versions, status), "
    "metrics.jsonl (one line per evaluation) and checkpoints/step_*.safetensors, as written by "
    "`inducthead train --config demo --out DIR` or `inducthead.train(..., out_dir=DIR)`."
)
SECTIONS = (
    ("summary", "Run summary"),
    ("curves", "Training curves"),
    ("heads", "Head scores and detect verdicts"),
    ("verify", "Causal verification"),
    ("dynamics", "Training dynamics"),
    ("attention", "Attention views"),
)


def open_run(run_dir) -> Run:
    """The `Run` at `run_dir`, or a RunDirError naming the path and what a run directory holds."""
    path = Path(run_dir).expanduser()
    if not path.exists():
        raise RunDirError(f"{path} does not exist. {RUN_DIR_HOLDS}")
    if not path.is_dir():
        raise RunDirError(f"{path} is a file, not a run directory. {RUN_DIR_HOLDS}")
    if not sr.is_run_dir(path):
        raise RunDirError(
            f"{path} is not an inducthead run directory: it has no run.json. {RUN_DIR_HOLDS}"
        )
    try:
        return Run(path)
    except (RunDirError, KeyError, TypeError) as e:  # run.json unreadable or without a config
        detail = str(e) if isinstance(e, RunDirError) else f"run.json lacks {e}"
        raise RunDirError(
            f"{path} cannot be read as a run directory: {detail} {RUN_DIR_HOLDS}"
        ) from None


def _guarded(section: Section, fn, *args):
    """Run one section's builder; an exception becomes a 'missing' line, warnings become notes."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return fn(section, *args)
        except Exception as e:  # the report shows what exists; one failing part must not end it
            message = " ".join(str(e).split())
            section.missing.append(f"could not be computed ({type(e).__name__}: {message})")
            return None
        finally:
            for w in caught:
                text = " ".join(str(w.message).split())
                if text not in section.notes:
                    section.notes.append(text)


def _load_model(run: Run):
    """The newest intact checkpoint's model, or None (the summary lists damaged ones)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # damaged checkpoints: named in the summary
        try:
            return run.load(device="cpu")
        except RunDirError:
            return None


def collect_report(run_dir, progress: bool = True) -> RunReport:
    """Every section of the report of the run at `run_dir` (see `build_report`). Detection and
    verification are read from RUN/detect.json and RUN/verify.json when they analysed the
    newest checkpoint, else computed (a progress bar shows the stages)."""
    run = open_run(run_dir)
    sections = {key: Section(key, title) for key, title in SECTIONS}
    stages = ("summary", "curves", "load model", "detect", "verify", "dynamics", "attention")
    bar = progress_bar(total=len(stages), desc="report", disable=not progress, leave=False)

    def begin(name: str) -> None:  # the previous stage is done
        if name != stages[0]:
            bar.update(1)
        bar.set_description(f"report: {name}")

    model = detection = None
    with bar:
        begin("summary")
        _guarded(sections["summary"], sr.summary_section, run)
        begin("curves")
        _guarded(sections["curves"], sr.curves_section, run)
        begin("load model")
        model = _load_model(run)
        begin("detect")
        if model is None:
            for key in ("heads", "verify", "attention"):
                sections[key].missing.append("no intact checkpoint to load a model from")
        else:
            step = sm.model_step(model)
            sections["heads"].text(f"Model: the checkpoint at step {step}.")
            detection = _guarded(sections["heads"], sm.heads_section, run, model, step)
            if detection is None:
                for key in ("verify", "attention"):
                    sections[key].missing.append("needs detect's verdicts, which failed")
        begin("verify")
        if detection is not None:
            _guarded(sections["verify"], sm.verify_section, run, model, step, detection)
        begin("dynamics")
        _guarded(sections["dynamics"], sm.dynamics_section, run, progress)
        begin("attention")
        if detection is not None:
            _guarded(sections["attention"], sm.attention_section, run, model, detection)
        bar.update(1)
    return RunReport(
        run_dir=run.path,
        title=f"inducthead report: {run.path.resolve().name}",
        sections=list(sections.values()),
        summary=repr(run),
    )


def build_report(run_dir, out=None, progress: bool = True) -> Path:
    """Write the self-contained HTML report of the run at `run_dir` and return its path.

    One file (default: RUN/report.html): the run summary (configs, task, steps, tokens, versions,
    status), training curves, detect's head-score heatmaps and verdicts, verify on the detected
    heads, the training dynamics over the checkpoints (head scores, loss and ICL, the
    phase-change window, emergence) and interactive attention views. Figures are inline PNG and
    the views carry circuitsvis's bundled JavaScript: nothing is loaded from any URL. A run that
    is half-written (still running, no checkpoint or metrics yet) gets a report of what exists
    with a line saying what is missing; a path that is no run directory is a RunDirError
    (ValueError) naming it."""
    report = collect_report(run_dir, progress=progress)
    if out is None:
        out = Run(report.run_dir).output_path(REPORT_NAME)
    return report.save(out)
