"""JSON config files: `presets.from_file` / `to_json` and `inducthead train --config FILE.json`."""

import json

import pytest

import inducthead as ih
from inducthead import presets
from inducthead.cli import main


@pytest.mark.parametrize("name", presets.list())
def test_a_preset_written_as_a_file_reads_back_equal(tmp_path, name):
    preset = presets.get(name)
    path = tmp_path / "p.json"
    path.write_text(presets.to_json(preset))
    back = presets.from_file(path)
    assert back.model == preset.model and back.train == preset.train
    assert back.task == preset.task and back.name == preset.name


def test_a_base_preset_is_updated_key_by_key(tmp_path):
    path = tmp_path / "demo-4heads.json"
    path.write_text(json.dumps({"base": "demo", "model": {"n_heads": 4}, "train": {"steps": 7}}))
    p, demo = presets.from_file(path), presets.get("demo")
    assert p.model.n_heads == 4 and p.model.d_model == demo.model.d_model
    assert p.train.steps == 7 and p.train.lr == demo.train.lr and p.task == demo.task
    assert p.name == "demo-4heads" and p.model.model_name == "demo-4heads"
    assert "based on demo" in p.description
    # another task name replaces the base task rather than mixing its fields in
    other = tmp_path / "o.json"
    other.write_text(json.dumps({"base": "demo", "task": {"name": "markov_icl"}}))
    task = presets.from_file(other).task
    assert task["name"] == "markov_icl" and "held_out_periods" not in task


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "does not exist"),
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "must hold a JSON object, got list"),
        ('{"base": "demo", "modle": {}}', "unknown key(s) ['modle']"),
        ('{"base": "demo", "model": {"n_haeds": 4}}', "unknown field(s) ['n_haeds']"),
        ('{"base": "demo", "train": {"stepz": 4}}', "unknown field(s) ['stepz']"),
        ('{"base": "nope"}', "unknown preset 'nope'"),
        ('{"model": {}, "task": {"name": "markov_icl"}}', "no 'train' part"),
        ('{"base": "demo", "model": 3}', "'model' must be a JSON object, got int"),
    ],
)
def test_bad_files_say_which_file_and_what(tmp_path, content, message):
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match="bad.json") as err:
        presets.from_file(path)
    assert message in str(err.value)


def test_train_from_a_config_file_on_the_command_line(tmp_path, capsys):
    assert main(["configs", "demo", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    d["name"] = "my-demo"
    d["model"]["n_heads"] = 3
    path = tmp_path / "my.json"
    path.write_text(json.dumps(d))
    out = tmp_path / "run"
    args = ["train", "--config", str(path), "--out", str(out), "--steps", "3", "--no-progress"]
    assert main(args) == 0
    run = ih.Run(out)
    assert run.meta["model"]["n_heads"] == 3 and run.meta["final_step"] == 3
    assert run.load(3).cfg.model_name == "my-demo"
    # resuming with the same file continues the run
    assert main([*args[:-2], "5", "--no-progress", "--resume"]) == 0
    assert ih.Run(out).meta["final_step"] == 5
    # a missing file is a one-line error, not a traceback
    assert main(["train", "--config", str(tmp_path / "gone.json"), "--out", str(out)]) == 2
    assert "gone.json does not exist" in capsys.readouterr().err


def test_configs_json_needs_a_name(capsys):
    assert main(["configs", "--json"]) == 2
    assert "--json prints one preset" in capsys.readouterr().err
