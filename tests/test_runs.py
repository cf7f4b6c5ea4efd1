"""The two sides of a run directory: `Run` reads (metrics parsed once), `RunWriter` writes."""

import json
import shutil

from conftest import ASSETS

import inducthead as ih
from inducthead.runs import Run, RunWriter
from inducthead.runs import run as run_module


def test_metrics_are_parsed_once_and_again_only_after_the_file_changes(tmp_path, monkeypatch):
    shutil.copytree(ASSETS / "demo", tmp_path / "demo")
    calls = []
    real = run_module.read_metrics
    monkeypatch.setattr(run_module, "read_metrics", lambda path: calls.append(path) or real(path))
    run = Run(tmp_path / "demo")
    first = run.metrics
    repr(run), run._repr_html_(), run.metrics, run.rows()
    assert len(calls) == 1 and len(first) == len(run.metrics)
    with open(tmp_path / "demo" / "metrics.jsonl", "a") as f:  # a run still training appends
        f.write(json.dumps({"step": 900, "eval_loss": 0.1}) + "\n")
    assert run.metrics.step.iloc[-1] == 900 and len(calls) == 2


def test_the_reader_cannot_write_and_the_writer_returns_a_reader(tmp_path):
    for name in ("log_metrics", "save_checkpoint", "restore", "finish", "lock"):
        assert not hasattr(Run, name) and hasattr(RunWriter, name)
    preset = ih.presets.get("demo")
    model = ih.HookedTransformer(preset.model)
    cfg = preset.train.replace(steps=2, eval_every=1, progress=False, checkpoint_steps=(0,))
    run = ih.train(model, preset.make_task(), cfg, tmp_path / "r")
    assert type(run) is Run and run.model is model and run.status == "finished"
    assert run.checkpoints == [0, 2] and run.metrics.step.tolist() == [0, 1, 2]
