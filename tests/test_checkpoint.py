import json
from pathlib import Path

import pytest
import torch
from conftest import perturbed, tiny_config

import inducthead as ih
from inducthead.recipe import checkpoint_schedule
from inducthead.runs import checkpoint as ckpt
from inducthead.runs import files


def _model_and_optimizer():
    model = perturbed(ih.HookedTransformer(tiny_config()))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randint(23, (2, 10)), return_type="loss").backward()
    opt.step()
    return model, opt


def test_schedule_is_log_spaced_and_complete():
    steps = checkpoint_schedule(10_000, 50)
    assert len(steps) == 50 and steps[0] == 0 and steps[-1] == 10_000
    assert steps == sorted(set(steps))
    gaps = [b - a for a, b in zip(steps[1:], steps[2:], strict=False)]
    assert sum(s <= 100 for s in steps) > sum(s > 5000 for s in steps)  # dense early
    assert gaps[-1] > 50 * gaps[0]
    assert checkpoint_schedule(10, 50) == list(range(11))
    assert checkpoint_schedule(0, 50) == [0]
    for total in (37, 100, 801, 12345):
        s = checkpoint_schedule(total, 20)
        assert len(s) == 20 and s[-1] == total


def test_round_trip_is_exact(tmp_path):
    model, opt = _model_and_optimizer()
    path = ckpt.write_checkpoint(tmp_path / "c.safetensors", model, opt, step=7, extra={"a": 1})
    tensors, meta = ckpt.read_checkpoint(path)
    assert meta["step"] == "7" and json.loads(meta["extra"]) == {"a": 1}
    loaded = ih.load(path)
    for (name, a), (_, b) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert loaded.cfg == model.cfg
    opt2 = torch.optim.AdamW(loaded.parameters(), lr=1e-3)
    ckpt.restore_optimizer(opt2, tensors, meta)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for idx in s1["state"]:
        for key, value in s1["state"][idx].items():
            assert torch.equal(value, s2["state"][idx][key])
    assert not list(tmp_path.glob("*.tmp"))  # no temporary file left behind


def test_damaged_files_are_named(tmp_path):
    model, opt = _model_and_optimizer()
    path = ckpt.write_checkpoint(tmp_path / "c.safetensors", model, opt, step=1)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ckpt.CheckpointError, match="truncated.safetensors"):
        ckpt.read_checkpoint(truncated)
    flipped = bytearray(data)
    flipped[-5] ^= 0xFF  # inside the last tensor's bytes: only the content hash can tell
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(bytes(flipped))
    with pytest.raises(ckpt.CheckpointError, match="corrupt.safetensors.*hash"):
        ckpt.read_checkpoint(corrupt)
    with pytest.raises(ckpt.CheckpointError, match="does not exist"):
        ckpt.read_checkpoint(tmp_path / "missing.safetensors")


def test_pickle_files_are_refused(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"not even opened")
    with pytest.raises(ckpt.CheckpointError, match="pickle"):
        ih.load(path)


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    files.atomic_write_bytes(target, b"old")

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", fail)
    with pytest.raises(OSError, match="disk full"):
        files.atomic_write_bytes(target, b"new content")
    assert target.read_bytes() == b"old"
    assert [p.name for p in Path(tmp_path).iterdir()] == ["f.bin"]
