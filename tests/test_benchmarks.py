"""Every benchmark script runs its whole code path at a toy size (`main(["--smoke"])`), so none can
rot between `make bench` runs. The scripts are the ones `make bench` runs (benchmarks/run_all.py):
a new script fails here until its `main(argv)` accepts `--smoke`."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
RESULTS = BENCHMARKS / "RESULTS.md"

# what each script's printed output must contain (regular expressions): its table and its ratios
EXPECTED = {
    "chen": [
        r"\| simplified \| \d+\.\d\d \| \d+\.\d\d \| \d+\.\d\d \| \d+\.\dx \| \d+\.\dx \|",
        r"data generation \d+ ms",
    ],
    "demo_emergence": [r"\| seed \| step reached \|", r"worst seed reaches both scores"],
    "detect_speed": [
        r"\| speed-up vs detect_head \| bridge / ours \|",
        r"\| \d+\.\d\dx \| \d+\.\d\d \| \d+\.\d\d \| \d\.\de[+-]\d+ \|",
    ],
    "dynamics": [r"\| Trajectory.head_scores \| \d", r"trajectory / naive throughput: \d+\.\d\dx"],
    "detect_thresholds": [r"\| model \| max prefix matching", r"Untrained maxima: prefix matching"],
    "musat_sweep": [r"\| batched \(one computation\) \| \d", r"batched speedup: \d+\.\d\dx"],
    "quick_modes": [
        r"\| paper \| wall time \(s\) \|",
        r"\| olsson \| \d+\.\d \| yes \| \d/6 claims",
    ],
    "multiseed": [r"\| together speedup", r"- training steps, interleaved: \d+\.\d\dx \(goal"],
    "train_throughput": [r"\| hooks \| implementation \|", r"ours ÷ plain SDPA = \d+\.\d\d"],
    "verify_thresholds": [r"\| model \| head \| clean loss", r"\| hand-built \| L1H\d"],
}


def load(path: Path, name: str, monkeypatch):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


def scripts() -> list[Path]:
    spec = importlib.util.spec_from_file_location("_benchmarks_run_all", BENCHMARKS / "run_all.py")
    run_all = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_all)
    return run_all.scripts()


# smoke runs of several seconds (verify_thresholds trains and verifies three models, ~8 s;
# musat_sweep runs its sweep twice, ~3 s; quick_modes analyses olsson's 1L run, ~15 s) are
# slow, to keep `make test-fast` near a minute
SLOW_SMOKE = ("verify_thresholds", "musat_sweep", "quick_modes")


def _params() -> list:
    return [
        pytest.param(p, id=p.stem, marks=[pytest.mark.slow] if p.stem in SLOW_SMOKE else [])
        for p in scripts()
    ]


def test_every_benchmark_script_is_found():
    assert {p.stem for p in scripts()} >= set(EXPECTED)


@pytest.mark.usefixtures("one_cpu_thread")  # tests/conftest.py
# toy sizes are below what the statistics want (detect shortens its probe, verify may warn about
# few sequences): smoke runs check code paths, so their UserWarnings are expected
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("script", _params())
def test_smoke_run(script: Path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # `from _common import record`
    before = RESULTS.read_bytes() if RESULTS.exists() else None
    module = load(script, f"benchmark_{script.stem}", monkeypatch)
    assert callable(getattr(module, "main", None)), f"{script.name} has no main(argv)"
    with torch.random.fork_rng(devices=[]):
        try:
            module.main(["--smoke"])
        except SystemExit as e:  # argparse: no --smoke option
            pytest.fail(f"{script.name} main(['--smoke']) exited with status {e.code}")
    out = capsys.readouterr().out
    after = RESULTS.read_bytes() if RESULTS.exists() else None
    assert after == before, f"{script.name} --smoke wrote to {RESULTS.name}"
    assert torch.is_grad_enabled(), f"{script.name} left autograd switched off"
    for pattern in EXPECTED.get(script.stem, [r"\S"]):
        assert re.search(pattern, out), f"{script.name} --smoke printed no {pattern!r}:\n{out}"
