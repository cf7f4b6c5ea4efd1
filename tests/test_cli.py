import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import ASSETS

import inducthead as ih
from inducthead.cli import main


def run_cli(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_configs_lists_presets(capsys):
    code, out, _ = run_cli(["configs"], capsys)
    assert code == 0 and "demo" in out and "olsson-attn-only-2l-small" in out
    code, out, _ = run_cli(["configs", "olsson-attn-only-1l"], capsys)
    assert code == 0 and "'d_model': 768" in out and "note:" in out


def test_errors_are_one_line(capsys):
    code, out, err = run_cli(["train", "--config", "nope", "--out", "x"], capsys)
    assert code == 2 and err.count("\n") == 1 and "unknown preset 'nope'; available: " in err
    assert "demo" in err.split("available: ")[1]
    assert "Traceback" not in err


def test_train_resume_and_refusals(tmp_path, capsys):
    out_dir = str(tmp_path / "run")
    args = ["train", "--config", "demo", "--out", out_dir, "--steps", "6", "--no-progress"]
    code, out, _ = run_cli(args, capsys)
    assert code == 0 and "step 6" in out
    assert ih.Run(out_dir).checkpoints[-1] == 6
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "--resume" in err and "--overwrite" in err
    code, out, _ = run_cli(
        [
            "train",
            "--config",
            "demo",
            "--out",
            out_dir,
            "--steps",
            "9",
            "--no-progress",
            "--resume",
        ],
        capsys,
    )
    assert code == 0 and ih.Run(out_dir).checkpoints[-1] == 9
    code, _, err = run_cli(args + ["--seed", "3", "--resume"], capsys)
    assert code == 2 and "model.seed: 0 -> 3" in err
    code, _, _ = run_cli(args + ["--seed", "3", "--overwrite"], capsys)
    assert code == 0 and json.loads((tmp_path / "run" / "run.json").read_text())["seed"] == 3


@pytest.mark.slow
def test_demo_prints_the_head_table(tmp_path, capsys):
    code, out, _ = run_cli(
        ["demo", "--out", str(tmp_path / "d"), "--steps", "5", "--no-progress", "--no-report"],
        capsys,
    )
    assert code == 0
    assert "p=13" in out and "p=25" in out and "p=37" in out and "L1H1" in out
    assert "prefix matching >= 0.5 at every held-out period" in out and "induction heads:" in out
    assert "inducthead.verify: causal role confirmed for" in out
    # running it again never replaces the run it made before: --out refuses, --overwrite asks
    code, _, err = run_cli(
        ["demo", "--out", str(tmp_path / "d"), "--steps", "5", "--no-progress", "--no-report"],
        capsys,
    )
    assert code == 2 and "--resume" in err and "--overwrite" in err
    code, _, _ = run_cli(
        [
            "demo",
            "--out",
            str(tmp_path / "d"),
            "--steps",
            "5",
            "--no-progress",
            "--no-report",
            "--overwrite",
        ],
        capsys,
    )
    assert code == 0


def test_debug_shows_the_traceback():
    with pytest.raises(ValueError, match="unknown preset"):
        main(["--debug", "train", "--config", "nope", "--out", "x"])


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_exits_130(tmp_path):
    out_dir = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "inducthead",
        "train",
        "--config",
        "demo",
        "--out",
        str(out_dir),
        "--steps",
        "100000",
        "--no-progress",
        "--device",
        "cpu",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until training is under way (step 20 written)
        ckpts = list((out_dir / "checkpoints").glob("step_0000002*.safetensors"))
        if ckpts:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    lines = [line for line in err.splitlines() if line.strip()]
    assert (
        len(lines) == 1 and "interrupted; checkpoint at step" in lines[0] and "--resume" in lines[0]
    )
    run = ih.Run(out_dir)
    assert run.checkpoints[-1] >= 20 and not run.damaged
    assert str(run.checkpoints[-1]) in lines[0]
    assert not (out_dir / ".lock").exists()
    assert os.path.exists(out_dir / "metrics.jsonl")


@pytest.mark.slow  # two demo trainings (~1.2 s)
def test_demo_never_deletes_a_run_it_did_not_make(tmp_path, capsys, monkeypatch):
    """A longer seed-7 run of the demo preset sits where the demo writes by default."""
    monkeypatch.chdir(tmp_path)
    keep = ["train", "--config", "demo", "--out", "runs/demo", "--steps", "7", "--seed", "7"]
    assert run_cli(keep + ["--no-progress"], capsys)[0] == 0
    before = {p: p.read_bytes() for p in (tmp_path / "runs" / "demo").rglob("*") if p.is_file()}
    code, out, _ = run_cli(["demo", "--steps", "5", "--no-progress", "--no-report"], capsys)
    assert code == 0 and "-> runs/demo-2" in out
    after = {p: p.read_bytes() for p in (tmp_path / "runs" / "demo").rglob("*") if p.is_file()}
    assert after == before and ih.Run("runs/demo").meta["seed"] == 7
    assert ih.Run("runs/demo-2").meta["final_step"] == 5


def test_errors_and_warnings_are_one_line_each(tmp_path, capsys):
    demo = str(ASSETS / "demo")
    for args, expected in [
        (["detect", demo, "--samples", "0"], "--samples must be >= 1"),
        (["detect", str(ASSETS / "build.py")], "is not a checkpoint"),
        (["verify", demo, "--samples", "0"], "--samples must be >= 1"),
    ]:
        code, _, err = run_cli(args, capsys)
        assert code == 2 and err.count("\n") == 1 and expected in err, (args, err)
    if not torch.cuda.is_available():
        code, _, err = run_cli(["detect", demo, "--device", "cuda"], capsys)
        assert code == 2 and err.count("\n") == 1 and "CUDA is not available" in err
    # a damaged newest checkpoint: one warning line naming it, and the step actually used
    run = tmp_path / "run"
    shutil.copytree(ASSETS / "demo", run)
    newest = run / "checkpoints" / "step_00000800.safetensors"
    newest.write_bytes(newest.read_bytes()[:300])
    code, out, err = run_cli(["detect", str(run)], capsys)
    assert code == 0 and "checkpoint: " in out and "(step 600)" in out
    warning_lines = [line for line in err.splitlines() if "warning" in line]
    assert len(warning_lines) == 1 and warning_lines[0].startswith("inducthead: warning: ")
    assert "step_00000800.safetensors" in warning_lines[0] and "UserWarning" not in err


def test_a_wrong_preset_resume_names_the_first_differences_only(tmp_path, capsys):
    out = str(tmp_path / "run")
    base = ["train", "--out", out, "--steps", "2", "--no-progress"]
    assert run_cli(["train", "--config", "demo", *base[1:]], capsys)[0] == 0
    code, _, err = run_cli(
        ["train", "--config", "olsson-attn-only-2l-small", *base[1:], "--resume"], capsys
    )
    assert code == 2 and err.count("\n") == 1
    assert "model 'demo', not 'olsson-attn-only-2l-small'" in err and "more)" in err
    assert err.count(" -> ") <= 5
