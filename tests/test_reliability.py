"""Reliability guarantees, tested by trying to break them (README "Reliability").

Training runs in child processes forked from one long-lived worker (this file run as a script:
`python tests/test_reliability.py worker`), which imports torch once, so each trial costs a fork
rather than an interpreter start. The worker kills or interrupts its children on request and
reports how they ended; everything is then checked here, from the files on disk.

Test hook used: INDUCTHEAD_TEST_SLOW_WRITE_S (inducthead/checkpoint.py) makes every atomic write
pause half-way through the temporary file and again before the rename, so kills land inside
checkpoint writes often; the number that did is counted from the temporary files left behind.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import pytest
import torch
from tqdm import tqdm

import inducthead as ih
from inducthead.runs import RunDirError, RunWriter, files
from inducthead.runs import checkpoint as ckpt
from inducthead.tasks import RepeatedTokens

TASK = RepeatedTokens(d_vocab=12, seq_len=20, min_period=3, max_period=8, held_out_periods=(5,))
STEP_FILE = re.compile(r"step_\d{8}\.safetensors")


def tiny_model() -> ih.HookedTransformer:
    """LN, MLP, biases: every kind of parameter and optimizer state ends up in checkpoints."""
    cfg = ih.HookedTransformerConfig(
        n_layers=2, d_model=16, n_heads=2, d_head=8, d_vocab=12, n_ctx=20, d_mlp=32, seed=0
    )
    return ih.HookedTransformer(cfg)


def recipe(**changes) -> ih.TrainConfig:
    """Warmup + cosine decay + weight decay + clipping: resuming must restore all of it."""
    base = dict(
        steps=20,
        batch_size=4,
        lr=3e-3,
        warmup_steps=5,
        schedule="cosine",
        weight_decay=0.01,
        grad_clip=1.0,
        eval_every=1000,
        eval_batch_size=4,
        checkpoint_steps=tuple(range(21)),
        progress=False,
        head_scores=False,
        device="cpu",
    )
    base.update(changes)
    return ih.TrainConfig(**base)


pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # tests/conftest.py


# ---------------------------------------------------------------------------------- the worker
def _child(job: dict) -> int:
    """Body of a forked child: train (optionally killing itself), run the CLI, or hold a lock."""
    if job.get("slow_write"):
        os.environ[files.SLOW_WRITE_ENV] = str(job["slow_write"])
    else:
        os.environ.pop(files.SLOW_WRITE_ENV, None)
    kind = job["kind"]
    if kind == "cli":
        from inducthead.cli import main

        try:
            return main(job["argv"])
        except SystemExit as e:
            return int(e.code or 0)
    if kind == "lock":
        cfg = recipe(**job.get("train", {}))
        run = RunWriter.create(job["dir"], tiny_model(), TASK, cfg, resume=True)
        time.sleep(max(0.0, job["start_at"] - time.time() - 0.005))
        while time.time() < job["start_at"]:  # all contenders start together
            pass
        with run.lock():
            with open(job["log"], "a") as f:
                f.write(f"enter {os.getpid()} {time.time()}\n")
            time.sleep(job["hold_s"])
            with open(job["log"], "a") as f:
                f.write(f"exit {os.getpid()} {time.time()}\n")
        return 0
    if kind == "long_context":
        return _long_context(job)
    hooks = []
    if job.get("self_kill_after_step") is not None:  # SIGKILL itself in the next step's forward
        calls = {"n": 0}

        def kill_hook(x, hook):
            if torch.is_grad_enabled():
                calls["n"] += 1
                if calls["n"] == job["self_kill_after_step"] + 1:
                    os.kill(os.getpid(), signal.SIGKILL)
            return x

        hooks = [("hook_embed", kill_hook)]
    cfg = recipe(**job.get("train", {}))
    ih.train(tiny_model(), TASK, cfg, job["dir"], resume=job.get("resume", False), hooks=hooks)
    return 0


def _long_context(job: dict) -> int:
    """detect on an n_ctx 2048 model, probes spanning the whole context, one sequence at a time;
    writes what it found to job["result"]."""
    import warnings

    cfg = ih.HookedTransformerConfig(
        n_layers=2, d_model=64, n_heads=4, d_head=16, d_vocab=1024, n_ctx=2048, attn_only=True,
        bos_token_id=0, seed=0,
    )  # fmt: skip
    model = ih.HookedTransformer(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = ih.detect(model, period=511, repeats=4, n_samples=2, batch_size=1)
    out = {"probe": report.probe, "scores": {}, "ablation": {}}
    for name, value in report.scores.items():
        finite = torch.isfinite(value)
        if name == "k_composition":
            finite = finite[1:]  # layer 0 has no earlier layer to compose with: NaN by design
        out["scores"][name] = [list(value.shape), bool(finite.all())]
    # ablation on two full-context sequences, one head's copy of the batch per forward
    tokens = torch.cat([torch.zeros(2, 1, dtype=torch.long), torch.randint(1, 1024, (2, 511))], 1)
    tokens = torch.cat([tokens, tokens[:, 1:].repeat(1, 3)], 1)[:, :2048]
    for mode in ("zero", "mean", "pattern_preserving"):
        scan = ih.ablation_scan(model, tokens, "loss", mode, reference=tokens, max_batch=2)
        value = scan.scores["loss"]
        out["ablation"][mode] = [list(value.shape), bool(torch.isfinite(value).all())]
    Path(job["result"]).write_text(json.dumps(out))
    return 0


def _temp_files(run_dir: Path) -> list[str]:
    folder = Path(run_dir) / ckpt.CHECKPOINT_DIR
    with_steps = [folder, Path(run_dir)]
    return [
        p.name
        for d in with_steps
        if d.is_dir()
        for p in d.iterdir()
        if files.TEMP_NAME.match(p.name)
    ]


def _start(job: dict) -> int:
    pid = os.fork()
    if pid == 0:  # the child: never returns into the worker loop
        code = 1
        # tqdm's write lock is a multiprocessing semaphore inherited through fork: a sibling
        # SIGKILLed while holding it would leave it taken, and this child would wait forever in
        # its first progress bar (seen once in CI). Each child gets its own lock.
        lock = threading.RLock()
        for bar in {tqdm, sys.modules["tqdm.auto"].tqdm} if "tqdm.auto" in sys.modules else {tqdm}:
            bar.set_lock(lock)
        try:
            for fd, name in ((1, job["stderr"] + ".out"), (2, job["stderr"])):  # off the pipe
                os.dup2(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644), fd)
            sys.stdout = os.fdopen(1, "w", buffering=1)
            sys.stderr = os.fdopen(2, "w", buffering=1)
            code = _child(job)
        except RunDirError as e:
            print(f"RunDirError: {e}", file=sys.stderr)
            code = 3
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


def _status(status: int) -> dict:
    if os.WIFSIGNALED(status):
        return {"signal": os.WTERMSIG(status), "code": None}
    return {"signal": None, "code": os.WEXITSTATUS(status)}


def _run(job: dict) -> dict:
    """Start a child, optionally signal it (after a delay, or once a checkpoint write of at least
    step `min_step` is under way), and wait for it."""
    t0 = time.monotonic()
    pid = _start(job)
    ctl = job.get("control")
    result: dict = {"pid": pid, "temp_at_signal": None}
    status = None
    if ctl:
        deadline = time.monotonic() + (ctl.get("after_s") or 30.0)
        folder = Path(job["dir"]) / ckpt.CHECKPOINT_DIR
        while time.monotonic() < deadline:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = st
                break
            if ctl.get("on_write_of_step") is not None and folder.is_dir():
                steps = [
                    int(m["name"][5:13])
                    for p in folder.iterdir()
                    if (m := files.TEMP_NAME.match(p.name)) and STEP_FILE.fullmatch(m["name"])
                ]
                if any(s >= ctl["on_write_of_step"] for s in steps):
                    time.sleep(ctl.get("offset_s", 0.0))
                    break
            time.sleep(0.001)
        if status is None:
            result["temp_at_signal"] = bool(_temp_files(job["dir"]))
            for _ in range(ctl.get("times", 1)):
                os.kill(pid, getattr(signal, ctl["signal"]))
                time.sleep(0.01)
    if status is None:
        _, status, usage = os.wait4(pid, 0)
        result["max_rss_mib"] = usage.ru_maxrss / 1024  # the child's peak (Linux: KiB)
    result.update(_status(status), elapsed_s=time.monotonic() - t0)
    return result


def worker_main() -> None:
    torch.set_num_threads(1)
    # Warm up lazy imports (AdamW imports torch._dynamo: seconds) once, before any fork.
    ih.train(tiny_model(), TASK, recipe(steps=2, checkpoint_steps=None, n_checkpoints=2))
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        cmd = job.pop("cmd", "run")
        if cmd == "run":
            out = _run(job)
        elif cmd == "start":
            out = {"pid": _start(job)}
        elif cmd == "signal":
            os.kill(job["pid"], getattr(signal, job["signal"]))
            out = {}
        else:  # wait
            out = _status(os.waitpid(job["pid"], 0)[1])
        print(json.dumps(out), flush=True)


class Worker:
    def __init__(self, tmp: Path):
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        env.pop(files.SLOW_WRITE_ENV, None)
        self.tmp = tmp
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=Path(__file__).parent,
        )
        assert json.loads(self.proc.stdout.readline()) == {"ready": True}
        self.n = 0

    def ask(self, cmd: str = "run", **job) -> dict:
        if "kind" in job and "stderr" not in job:
            self.n += 1
            job["stderr"] = str(self.tmp / f"stderr_{self.n}.txt")
        self.proc.stdin.write(json.dumps({"cmd": cmd, **job}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the worker process died"
        out = json.loads(line)
        if "stderr" in job:
            out["stderr_file"] = job["stderr"]
        return out

    def close(self) -> None:
        self.proc.kill()  # no children are left running; skip the interpreter's slow teardown
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    w = Worker(tmp_path_factory.mktemp("worker"))
    yield w
    w.close()


def _stderr(result: dict) -> str:
    return Path(result["stderr_file"]).read_text()


def _assert_ok(result: dict) -> None:
    assert result["code"] == 0 and result["signal"] is None, _stderr(result)


# ---------------------------------------------------------------------------------- checks
def visible_checkpoints(run_dir: Path) -> dict[int, tuple[int, int]]:
    """Verify every file under a final name in checkpoints/; return {step: (inode, mtime_ns)}.

    Fails if any final-named file is partial or corrupt, or anything unexpected is there."""
    folder = Path(run_dir) / ckpt.CHECKPOINT_DIR
    found = {}
    if not folder.is_dir():
        return found
    for path in folder.iterdir():
        if files.TEMP_NAME.match(path.name):
            continue  # a write in progress when the process died: never under a final name
        assert STEP_FILE.fullmatch(path.name), f"unexpected file {path}"
        try:
            ckpt.read_checkpoint(path)
        except ckpt.CheckpointError as e:
            pytest.fail(f"a damaged file is visible under its final name: {e}")
        st = path.stat()
        found[int(path.name[5:13])] = (st.st_ino, st.st_mtime_ns)
    return found


def checkpoint_tensors(path: Path) -> dict[str, torch.Tensor]:
    return ckpt.read_checkpoint(path)[0]


def assert_same_tensors(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and torch.equal(a[name], b[name]), name


def metric_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("elapsed_s")
    return rows


# ---------------------------------------------------------------------------------- 1. kill -9
@pytest.mark.slow
def test_kill_9_at_random_moments_never_loses_or_corrupts_a_checkpoint(worker, tmp_path):
    """24 trainers are SIGKILLed at random moments, half of them with slowed checkpoint writes
    and a third of those exactly while a write is under way. After every kill, each file under a
    final name verifies; resuming then continues from the newest complete checkpoint (older
    files untouched, temporary files cleaned up) and ends bitwise equal to an uninterrupted run."""
    train = dict(steps=12, checkpoint_steps=tuple(range(13)))  # a checkpoint every step
    reference = worker.ask(kind="train", dir=str(tmp_path / "reference"), train=train)
    _assert_ok(reference)
    ref_final = checkpoint_tensors(tmp_path / "reference/checkpoints/step_00000012.safetensors")
    ref_rows = metric_rows(tmp_path / "reference")
    rng = random.Random(7)
    killed, killed_in_write, resumed_from = 0, 0, []
    for trial in range(24):
        run_dir = tmp_path / f"trial{trial}"
        slow = 0.02 if trial % 2 else 0.0
        if trial % 6 == 5:  # wait for a write to be under way, then kill inside it
            control = {"signal": "SIGKILL", "on_write_of_step": rng.randint(1, 9)}
            control["offset_s"] = rng.uniform(0, 0.03)
        else:
            # within the time an unslowed run takes, so nearly every trial is cut short
            control = {
                "signal": "SIGKILL",
                "after_s": rng.uniform(0.0, 0.9) * reference["elapsed_s"],
            }
        res = worker.ask(
            kind="train", dir=str(run_dir), train=train, slow_write=slow, control=control
        )
        assert res["signal"] == signal.SIGKILL or res["code"] == 0, _stderr(res)
        killed += res["signal"] == signal.SIGKILL
        leftovers = _temp_files(run_dir) if run_dir.exists() else []
        killed_in_write += bool(leftovers)

        before = visible_checkpoints(run_dir)  # fails on any partial/corrupt final-named file
        last = max(before, default=None)
        resumed = worker.ask(kind="train", dir=str(run_dir), train=train, resume=True)
        _assert_ok(resumed)
        after = visible_checkpoints(run_dir)
        assert set(after) == set(range(13))
        for step, ident in before.items():  # resume started at `last`: nothing older rewritten
            assert after[step] == ident, f"trial {trial}: checkpoint {step} was rewritten"
        resumed_from.append(last)
        assert _temp_files(run_dir) == [] and not (run_dir / ".lock").exists()
        final = checkpoint_tensors(run_dir / "checkpoints/step_00000012.safetensors")
        assert_same_tensors(final, ref_final)  # weights, optimizer and RNG state
        assert metric_rows(run_dir) == ref_rows, f"trial {trial}: metrics differ"
    print(
        f"\nkill -9 trials: 24, killed {killed}, killed inside a checkpoint write "
        f"{killed_in_write}, resumed from steps {resumed_from}"
    )
    assert killed >= 20 and killed_in_write >= 5


# ---------------------------------------------------------------------------------- 2. exact resume
@pytest.mark.slow
def test_200_steps_equal_100_steps_kill_9_and_resume_to_200(worker, tmp_path):
    """Bitwise on the CPU: weights, AdamW moments, RNG state and every metrics row (losses, head
    scores) of 200 straight steps equal those of a run SIGKILLed right after step 100."""
    train = dict(steps=200, checkpoint_steps=(100,), eval_every=25, head_scores=True)
    _assert_ok(worker.ask(kind="train", dir=str(tmp_path / "straight"), train=train))
    cut = tmp_path / "cut"
    res = worker.ask(kind="train", dir=str(cut), train=train, self_kill_after_step=100)
    assert res["signal"] == signal.SIGKILL, _stderr(res)
    assert sorted(visible_checkpoints(cut)) == [100]
    _assert_ok(worker.ask(kind="train", dir=str(cut), train=train, resume=True))
    name = "checkpoints/step_00000200.safetensors"
    assert_same_tensors(
        checkpoint_tensors(cut / name), checkpoint_tensors(tmp_path / "straight" / name)
    )
    rows = metric_rows(cut)
    assert [r["step"] for r in rows] == [0, 25, 50, 75, 100, 125, 150, 175, 200]
    assert rows == metric_rows(tmp_path / "straight")


@pytest.mark.slow
def test_resume_from_the_step_0_checkpoint_repeats_nothing(worker, tmp_path):
    """Killed right after the step-0 checkpoint: the resumed run's metrics have one row per
    evaluation (no duplicated step-0 row) and equal an uninterrupted run's."""
    train = dict(steps=6, checkpoint_steps=(0, 6), eval_every=3)
    _assert_ok(worker.ask(kind="train", dir=str(tmp_path / "straight"), train=train))
    cut = tmp_path / "cut"
    res = worker.ask(kind="train", dir=str(cut), train=train, self_kill_after_step=0)
    assert res["signal"] == signal.SIGKILL and sorted(visible_checkpoints(cut)) == [0]
    _assert_ok(worker.ask(kind="train", dir=str(cut), train=train, resume=True))
    assert metric_rows(cut) == metric_rows(tmp_path / "straight")
    name = "checkpoints/step_00000006.safetensors"
    assert_same_tensors(
        checkpoint_tensors(cut / name), checkpoint_tensors(tmp_path / "straight" / name)
    )


# ---------------------------------------------------------------------------------- 3. Ctrl-C
def _cli_args(out: Path, steps: int) -> list[str]:
    return [
        "train",
        "--config",
        "demo",
        "--out",
        str(out),
        "--steps",
        str(steps),
        "--no-progress",
        "--device",
        "cpu",
    ]


@pytest.mark.slow
def test_ctrl_c_during_a_checkpoint_write_finishes_it_and_exits_130(worker, tmp_path):
    """SIGINT arriving in the middle of a (slowed) checkpoint write: the write completes, that
    step is the final checkpoint, exit status 130 with one line naming it, and --resume goes on."""
    out = tmp_path / "run"
    control = {"signal": "SIGINT", "on_write_of_step": 3, "offset_s": 0.01}
    res = worker.ask(
        kind="cli", argv=_cli_args(out, 300), slow_write=0.05, dir=str(out), control=control
    )
    assert res["temp_at_signal"], "the signal did not arrive during a write"
    assert res["code"] == 130, _stderr(res)
    lines = [line for line in _stderr(res).splitlines() if line.strip()]
    steps = sorted(visible_checkpoints(out))
    assert len(lines) == 1 and f"interrupted; checkpoint at step {steps[-1]} in {out}" in lines[0]
    assert "--resume" in lines[0] and steps[-1] >= 3
    assert _temp_files(out) == [] and not (out / ".lock").exists()
    res = worker.ask(kind="cli", argv=_cli_args(out, steps[-1] + 2) + ["--resume"])
    _assert_ok(res)
    assert max(visible_checkpoints(out)) == steps[-1] + 2


@pytest.mark.slow
def test_second_ctrl_c_interrupts_a_write_at_once_without_a_partial_file(worker, tmp_path):
    """Two SIGINTs inside one write: the second aborts the write; its temporary file is removed,
    every visible checkpoint verifies, and the exit is still 130 with one line."""
    out = tmp_path / "run"
    control = {"signal": "SIGINT", "on_write_of_step": 3, "offset_s": 0.0, "times": 2}
    res = worker.ask(
        kind="cli", argv=_cli_args(out, 300), slow_write=0.2, dir=str(out), control=control
    )
    assert res["temp_at_signal"] and res["code"] == 130, _stderr(res)
    lines = [line for line in _stderr(res).splitlines() if line.strip()]
    steps = sorted(visible_checkpoints(out))
    assert len(lines) == 1 and f"checkpoint at step {steps[-1]} " in lines[0]
    assert _temp_files(out) == [] and not (out / ".lock").exists()


# ---------------------------------------------------------------------------------- 4. damage
def _small_checkpoint(path: Path) -> Path:
    cfg = ih.HookedTransformerConfig(
        n_layers=1, d_model=4, n_heads=1, d_head=2, d_vocab=5, n_ctx=3, attn_only=True
    )
    model = ih.HookedTransformer(cfg.replace(normalization_type=None, use_bias=False))
    opt = torch.optim.AdamW(model.parameters())
    model(torch.tensor([[1, 2, 3]]), return_type="loss").backward()
    opt.step()
    return ckpt.write_checkpoint(path, model, opt, step=8, extra={"k": 1})


def _poke(path: Path, offset: int, value: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(bytes([value]))


def test_every_header_byte_changed_and_every_truncation_is_refused_or_harmless(tmp_path):
    """Each byte of a checkpoint's length prefix and JSON header changed (by a random non-zero
    XOR), 300 random bytes of its tensor data changed, and every truncation of the header:
    read_checkpoint raises CheckpointError naming the file or returns exactly the original
    content; never another exception, never different content."""
    good = _small_checkpoint(tmp_path / "good.safetensors")
    data = good.read_bytes()
    tensors, meta = ckpt.read_checkpoint(good)
    header_end = 8 + int.from_bytes(data[:8], "little")
    rng = random.Random(0)
    positions = [*range(header_end), *rng.sample(range(header_end, len(data)), 300)]
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(data)
    refused = harmless = 0
    for i in positions:  # changed in place: no truncate-and-rewrite (slow on ext4)
        _poke(bad, i, data[i] ^ rng.randint(1, 255))
        try:
            t2, m2 = ckpt.read_checkpoint(bad)
        except ckpt.CheckpointError as e:
            assert str(bad) in str(e)
            refused += 1
        else:
            assert_same_tensors(t2, tensors)
            assert m2 == meta, f"byte {i}: the metadata changed silently"
            harmless += 1
        _poke(bad, i, data[i])
    lengths = [*range(header_end + 1), *rng.sample(range(header_end + 1, len(data)), 100)]
    for n in sorted(lengths, reverse=True):  # each truncation shortens the previous one
        os.truncate(bad, n)
        with pytest.raises(ckpt.CheckpointError, match=re.escape(str(bad))):
            ckpt.read_checkpoint(bad)
    print(
        f"\n{len(data)}-byte checkpoint, {len(positions)} bytes changed: {refused} refused, "
        f"{harmless} harmless; {header_end + 101} truncations refused"
    )
    assert refused >= 0.95 * len(positions)


def test_changed_metadata_is_detected(tmp_path):
    """The step (and every other metadata entry) is covered by a hash: a checkpoint whose step
    was edited from 8 to 9 would otherwise resume at the wrong step, silently."""
    path = _small_checkpoint(tmp_path / "c.safetensors")
    data = path.read_bytes()
    assert data.count(b'"step":"8"') == 1
    path.write_bytes(data.replace(b'"step":"8"', b'"step":"9"'))
    with pytest.raises(ckpt.CheckpointError, match="c.safetensors is corrupt: its metadata hash"):
        ckpt.read_checkpoint(path)


def test_damaged_checkpoints_in_a_run_are_listed_skipped_and_the_rest_stay_usable(tmp_path):
    out = tmp_path / "run"
    cfg = recipe(steps=12, checkpoint_steps=(3, 6, 9, 12))
    with pytest.raises(KeyboardInterrupt):
        ih.train(tiny_model(), TASK, cfg, out, hooks=_interrupt_at(10))  # checkpoint at step 10
    run = ih.Run(out)
    assert run.checkpoints == [3, 6, 9, 10]
    damage = {
        10: lambda b: b[: len(b) // 3],  # truncated
        9: lambda b: b[:-7] + bytes([b[-7] ^ 0x10]) + b[-6:],  # one bit in the tensor data
        6: lambda b: b"",  # empty
    }
    for step, fn in damage.items():
        p = run.checkpoint_path(step)
        p.write_bytes(fn(p.read_bytes()))
    listed = dict(run.damaged)
    assert sorted(listed) == [6, 9, 10]
    for step, reason in listed.items():
        assert run.checkpoint_path(step).name in reason
    assert "truncated" in listed[10] and "content hash" in listed[9]
    newest_intact = ih.load(run.checkpoint_path(3))
    assert torch.equal(run.load().W_Q, newest_intact.W_Q)  # newest intact one
    with pytest.raises(ckpt.CheckpointError, match="step_00000009.safetensors"):
        run.load(step=9)
    with pytest.warns(UserWarning, match="skipping damaged checkpoint") as caught:
        resumed = ih.train(tiny_model(), TASK, cfg, out, resume=True)
    skipped = " ".join(str(w.message) for w in caught)
    assert all(f"step_{s:08d}" in skipped for s in (6, 9, 10))
    straight = ih.train(tiny_model(), TASK, cfg)
    assert_same_tensors(resumed.model.state_dict(), straight.model.state_dict())
    # 6 and 9 were rewritten by the resumed run; the damaged 10 is kept for inspection
    assert [s for s, _ in ih.Run(out).damaged] == [10]


def _interrupt_at(step_count: int):
    calls = {"n": 0}

    def hook(x, hook):
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == step_count:
                os.kill(os.getpid(), signal.SIGINT)
        return x

    return [("hook_embed", hook)]


# ---------------------------------------------------------------------------------- 7. locks
@pytest.mark.slow
def test_a_second_trainer_is_refused_until_the_first_is_killed_then_takes_over(worker, tmp_path):
    out = tmp_path / "run"
    a = worker.ask("start", kind="train", dir=str(out), slow_write=0.1)["pid"]
    deadline = time.time() + 30
    while not list(out.glob("checkpoints/step_*.safetensors")) and time.time() < deadline:
        time.sleep(0.01)
    before = (out / "run.json").read_text()
    with pytest.raises(RunDirError, match=f"locked by process {a}@"):
        ih.train(tiny_model(), TASK, recipe(), out, resume=True)
    b = worker.ask(kind="train", dir=str(out), resume=True)
    assert b["code"] == 3 and f"locked by process {a}@" in _stderr(b)
    assert (out / "run.json").read_text() == before  # the refused trainers changed nothing
    worker.ask("signal", pid=a, signal="SIGKILL")
    assert worker.ask("wait", pid=a)["signal"] == signal.SIGKILL
    assert (out / ".lock").read_text().startswith(f"{a}@")  # stale: its owner is dead
    _assert_ok(worker.ask(kind="train", dir=str(out), resume=True))
    assert sorted(visible_checkpoints(out)) == list(range(21))
    assert not (out / ".lock").exists()


@pytest.mark.slow
def test_contending_trainers_never_hold_the_lock_together(worker, tmp_path):
    """Four processes race for a run directory whose lock is stale (dead owner), four times:
    the lock is never held by two at once and the losers are refused with the owner's PID."""
    out = tmp_path / "run"
    train = dict(steps=1, checkpoint_steps=None, n_checkpoints=2)
    ih.train(tiny_model(), TASK, recipe(**train), out)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for round_ in range(4):
        (out / ".lock").write_text(f"{dead.pid}@{socket.gethostname()}")
        log = tmp_path / f"log{round_}"
        start_at = time.time() + 0.5
        job = dict(kind="lock", dir=str(out), log=str(log), start_at=start_at, hold_s=0.2)
        job["train"] = train
        pids = [
            worker.ask("start", **job, stderr=str(tmp_path / f"e{round_}_{i}"))["pid"]
            for i in range(4)
        ]
        codes = [worker.ask("wait", pid=pid)["code"] for pid in pids]
        events = [line.split() for line in log.read_text().splitlines()]
        holders = 0
        for kind, _, _ in sorted(events, key=lambda e: float(e[2])):
            holders += 1 if kind == "enter" else -1
            assert holders <= 1, f"two processes held the lock: {events}"
        assert codes.count(0) >= 1 and set(codes) <= {0, 3}
        for i, code in enumerate(codes):
            if code == 3:
                assert "is locked by process" in (tmp_path / f"e{round_}_{i}").read_text()


# ---------------------------------------------------------------------------------- 9. long inputs
@pytest.mark.slow
def test_detect_and_ablation_at_n_ctx_2048_on_the_cpu_within_24_gib(worker, tmp_path):
    """detect with probes of 2044 tokens (period 511 and a coprime one, 4 repeats), batched one
    sequence at a time, then ablation scans of every head in all three modes on two 2048-token
    sequences; the child's peak resident memory is printed and must stay under 24 GiB."""
    result = tmp_path / "long.json"
    res = worker.ask(kind="long_context", result=str(result))
    _assert_ok(res)
    found = json.loads(result.read_text())
    assert found["probe"]["length"] == 2044 and found["probe"]["periods"][0] == 511
    assert all(shape == [2, 4] and finite for shape, finite in found["scores"].values())
    assert sorted(found["ablation"]) == ["mean", "pattern_preserving", "zero"]
    assert all(shape == [2, 4] and finite for shape, finite in found["ablation"].values())
    print(
        f"\ndetect and ablation_scan (zero, mean, pattern-preserving) at n_ctx 2048: peak memory "
        f"{res['max_rss_mib']:.0f} MiB, {res['elapsed_s']:.1f} s"
    )
    assert res["max_rss_mib"] < 24 * 1024


if __name__ == "__main__" and sys.argv[1:] == ["worker"]:
    worker_main()
