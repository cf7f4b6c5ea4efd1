"""Data-parallel training: `torchrun --nproc_per_node 2 -m inducthead train ...` on the CPU (gloo)
computes the same run as one process with the same global batch."""

import json
import os
import subprocess
import sys

import pytest
import torch
from test_train import TASK

import inducthead as ih
from inducthead.tasks import Batch
from inducthead.training.distributed import DistContext


def torchrun(*args, nproc=2):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += [f"--nproc_per_node={nproc}", "-m", "inducthead", "train", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def rows(path):
    out = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    for r in out:
        r.pop("elapsed_s")
    return out


@pytest.mark.slow
def test_two_processes_give_the_single_process_loss_curve(tmp_path):
    out = tmp_path / "ddp"
    common = ["--config", "demo", "--out", str(out), "--device", "cpu", "--no-progress"]
    first = torchrun(*common, "--steps", "5")  # then resume to 8: the resume path runs too
    assert first.returncode == 0, first.stderr[-3000:]
    second = torchrun(*common, "--steps", "8", "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("trained in") == 1  # only rank 0 reports
    preset = ih.configs.get("demo")
    single = ih.train(
        ih.HookedTransformer(preset.model),
        preset.make_task(),
        preset.train.replace(steps=8, progress=False, device="cpu"),
        tmp_path / "single",
    )
    ddp_rows, one_rows = rows(out), rows(tmp_path / "single")
    assert [r["step"] for r in ddp_rows] == [r["step"] for r in one_rows] == list(range(9))
    for a, b in zip(ddp_rows, one_rows, strict=True):  # the loss curve, step by step
        for key in ("train_loss", "eval_loss", "best_prefix_matching", "best_previous_token"):
            if b[key] is None:
                assert a[key] is None
            else:
                assert a[key] == pytest.approx(b[key], abs=1e-5, rel=1e-5), (a["step"], key)
    assert ih.Run(out).checkpoints == single.checkpoints  # written once, by rank 0
    torch.testing.assert_close(ih.load(out).W_Q, single.model.W_Q, atol=1e-5, rtol=1e-5)
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    assert not (out / ".lock").exists()


def test_ranks_take_disjoint_slices_of_the_global_batch():
    batch = TASK.sample(6, seed=3)
    ranks = [DistContext(r, 3, r, torch.device("cpu"), False) for r in range(3)]
    parts = [ctx.shard(batch) for ctx in ranks]
    assert all(isinstance(p, Batch) and len(p) == 2 for p in parts)
    for name in ("tokens", "targets", "mask"):
        torch.testing.assert_close(
            torch.cat([getattr(p, name) for p in parts]), getattr(batch, name), atol=0, rtol=0
        )
    torch.testing.assert_close(torch.cat([p.info["period"] for p in parts]), batch.info["period"])
    with pytest.raises(ValueError, match="divisible by the number of processes"):
        ranks[0].check_batch_size(32)
