import pytest
from conftest import ASSETS

import inducthead as ih
from inducthead import sweep
from inducthead.analysis import emergence_step
from inducthead.cli import main
from inducthead.runs import safe_child

# demo-preset cells of a few steps: enough to exercise the machinery
SET = {"train.steps": 3, "train.eval_every": 3, "train.eval_batch_size": 4, "train.batch_size": 4}


def test_plan_builds_the_grid_and_safe_cell_names(tmp_path):
    spec = {
        "presets": ["demo"],
        "seeds": [0, 1],
        "set": {**SET, "task.max_period": 30, "task.held_out_periods": [13, 25]},
        "grid": {
            "train.lr": [0.01, 0.003],
            "N": [
                {"task.seq_len": 64, "model.n_ctx": 64},
                {"label": "long", "task.seq_len": 96, "model.n_ctx": 96},
            ],
            "model.model_name": ["../../escape", "/abs"],
        },
    }
    cells = sweep.plan(spec)
    assert len(cells) == 2 * 2 * 2 * 2
    first = cells[0]
    assert first.params == {"train.lr": "0.01", "N": "64-64", "model.model_name": "../../escape"}
    model, task, train = first.build()
    assert (model.n_ctx, task.seq_len, train.lr, train.steps, model.seed, train.seed) == (
        64,
        64,
        0.01,
        3,
        0,
        0,
    )
    assert cells[1].seed == 1 and cells[1].build()[0].seed == 1
    assert cells[4].params["N"] == "long" and cells[4].build()[0].n_ctx == 96
    for cell in cells:  # grid values never make a path outside the sweep directory
        assert "/" not in cell.name and not cell.name.startswith(".")
        path = safe_child(tmp_path, cell.name).resolve()
        assert path.parent == tmp_path.resolve()
    assert len({c.name for c in cells}) == len(cells)
    with pytest.raises(ValueError):
        safe_child(tmp_path, "../x")


@pytest.mark.parametrize(
    "change, match",
    [
        ({"grid": {"train.nope": [1]}}, "unknown field"),
        ({"grid": {"lr": [1]}}, "model.FIELD, task.FIELD or train.FIELD"),
        ({"grid": {"train.seed": [1, 2]}}, "seeds come from"),
        ({"seeds": [1, 1]}, "distinct integers"),
        ({"grid": {"model.model_name": ["a/b", "a_b"]}}, "both map to the directory name"),
        ({"presets": ["nope"]}, "unknown preset"),
        ({"grdi": {}}, "unknown key"),
    ],
)
def test_bad_specs_are_refused_before_anything_runs(tmp_path, change, match):
    spec = {"presets": ["demo"], "set": SET, **change}
    with pytest.raises(sweep.SweepError, match=match):
        sweep.run_sweep(spec, tmp_path / "s", log=None)
    assert not (tmp_path / "s").exists()


def test_emergence_step():
    rows = [
        {"step": 0, "best_prefix_matching": 0.1, "best_previous_token": 0.2},
        {"step": 20, "best_prefix_matching": 0.6, "best_previous_token": 0.4},
        {"step": 10, "best_prefix_matching": 0.2, "best_previous_token": 0.7},
        {"step": 30, "best_prefix_matching": 0.5, "best_previous_token": 0.9},
        {"step": 40, "best_prefix_matching": 0.9, "best_previous_token": 0.9},
    ]
    assert emergence_step(rows) == 30
    assert emergence_step(rows, threshold=0.55) == 40
    assert emergence_step(rows, columns=("best_prefix_matching",)) == 20
    assert emergence_step(rows, threshold=0.95) is None
    assert emergence_step([{"step": 0, "best_prefix_matching": None}]) is None


def test_emergence_of_the_shipped_demo_run():
    demo = ih.Run(ASSETS / "demo")
    step = emergence_step(demo)
    assert step == emergence_step(ASSETS / "demo") == emergence_step(demo.metrics)
    m = demo.metrics.set_index("step")
    assert m.best_prefix_matching[step] >= 0.5 and m.best_previous_token[step] >= 0.5
    earlier = m[m.index < step]
    assert ((earlier.best_prefix_matching < 0.5) | (earlier.best_previous_token < 0.5)).all()


def test_local_sweep_retries_failures_and_never_reruns_finished_cells(tmp_path, monkeypatch):
    spec = {"presets": ["demo"], "seeds": [0, 1], "set": SET, "retries": 2}
    real, calls = sweep.run_cell, []

    def flaky(cell, sweep_dir, threshold=0.5):
        calls.append(cell["name"])
        if cell["seed"] == 1 and calls.count(cell["name"]) < 3:
            raise RuntimeError("worker lost")
        return real(cell, sweep_dir, threshold)

    monkeypatch.setattr(sweep.backends, "run_cell", flaky)
    result = sweep.run_sweep(spec, tmp_path, log=None)
    by_seed = {r["seed"]: r for r in result.rows}
    assert by_seed[0]["status"] == "finished" and by_seed[0]["attempts"] == 1
    assert by_seed[1]["status"] == "finished" and by_seed[1]["attempts"] == 3
    for r in result.rows:
        assert r["final_step"] == 3 and r["eval_loss"] > 0 and r["error"] is None
        assert ih.Run(tmp_path / r["cell"]).checkpoints[-1] == 3
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.safetensors")}
    again = sweep.run_sweep(spec, tmp_path, log=None)
    assert [r["status"] for r in again.rows] == ["done before", "done before"]
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.safetensors")} == stamps
    assert [r["eval_loss"] for r in again.rows] == [r["eval_loss"] for r in result.rows]
    csv_text = (tmp_path / "results.csv").read_text()
    assert csv_text.splitlines()[0].startswith("cell,preset,seed,status,attempts")


@pytest.mark.slow
def test_ray_sweep_on_a_local_two_cpu_cluster(tmp_path, capsys):
    out = tmp_path / "sweep"
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "presets: [demo]\nseeds: [0, 1]\nretries: 1\nset:\n"
        + "".join(f"  {k}: {v}\n" for k, v in SET.items())
        + "grid:\n  train.lr: [0.01]\n"
    )
    blocked = out / "demo,train.lr=0.01,seed=1"
    blocked.mkdir(parents=True)
    (blocked / "notes.txt").write_text("not a run")  # this cell fails on every attempt
    args = ["sweep", str(spec), "--out", str(out), "--backend", "ray", "--ray-cpus", "2"]
    code = main(args)
    printed = capsys.readouterr().out
    assert code == 1
    assert "failed: demo,train.lr=0.01,seed=1 after 2 attempt(s)" in printed
    assert "not a run directory" in printed
    rows = {r["seed"]: r for r in _csv(out / "results.csv")}
    assert rows["0"]["status"] == "finished" and rows["0"]["attempts"] == "1"
    assert rows["1"]["status"] == "failed" and rows["1"]["attempts"] == "2"
    assert ih.Run(out / "demo,train.lr=0.01,seed=0").checkpoints[-1] == 3
    (blocked / "notes.txt").unlink()  # fixed: a rerun trains only the failed cell
    code = main(["sweep", str(spec), "--out", str(out)])
    assert code == 0
    rows = {r["seed"]: r for r in _csv(out / "results.csv")}
    assert rows["0"]["status"] == "done before" and rows["1"]["status"] == "finished"


def _csv(path):
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))


def test_a_cell_trained_with_another_setup_is_never_reported_as_done(tmp_path):
    """Rerunning with a changed `set:` value (not part of the cell name) must not report the
    old results: the cell is refused, naming the difference, and its run stays untouched."""
    spec = {"presets": ["demo"], "seeds": [0], "set": {**SET, "train.lr": 1e-2}, "retries": 0}
    first = sweep.run_sweep(spec, tmp_path, log=None)
    assert first.rows[0]["status"] == "finished"
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.safetensors")}
    changed = {**spec, "set": {**SET, "train.lr": 1e-4}}
    again = sweep.run_sweep(changed, tmp_path, log=None)
    row = again.rows[0]
    assert row["status"] == "failed" and "train.lr: 0.01 -> 0.0001" in row["error"]
    assert "new --out" in row["error"]
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.safetensors")} == stamps
    # a setting that does not change the weights (progress, device, ...) still counts as done
    quiet = {**spec, "set": {**spec["set"], "train.log_every": 1}}
    assert sweep.run_sweep(quiet, tmp_path, log=None).rows[0]["status"] == "done before"


def test_numbers_that_yaml_reads_as_strings_are_numbers(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(
        "presets: [demo]\nset:\n  train.lr: 1e-3\n  train.steps: 3\n  model.embed_init_std: .5\n"
        "grid:\n  train.weight_decay: [1e-2, 0]\n"
    )
    spec = sweep.read_spec(path)
    assert spec["set"]["train.lr"] == "1e-3"  # what PyYAML makes of it
    cells = sweep.plan(spec)
    model, _, train = cells[0].build()
    assert train.lr == 1e-3 and train.steps == 3 and model.embed_init_std == 0.5
    assert [c.build()[2].weight_decay for c in cells] == [0.01, 0]
    with pytest.raises(sweep.SweepError, match="model_name"):  # strings stay strings
        sweep.plan({"presets": ["demo"], "set": {"model.model_name": 3}})
