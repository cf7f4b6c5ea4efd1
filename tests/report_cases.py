"""Run directories the report tests share (tests/test_report.py, tests/test_report_browser.py):
the shipped demo run copied out of assets/ (the report writes its dynamics cache into the run),
its report built once per test process, and half-written runs made from it."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch

from inducthead.report import RunReport, collect_report

DEMO = Path(__file__).resolve().parent.parent / "assets" / "demo"
_built: dict[str, tuple[Path, RunReport, float]] = {}


def demo_copy(where: Path) -> Path:
    """A copy of the shipped demo run (14 checkpoints, steps 0-800) at `where`."""
    shutil.copytree(DEMO, where)
    return where


def demo_report(tmp_path_factory) -> tuple[Path, RunReport, float]:
    """(run dir, its RunReport, seconds taken), computed once per process: every section. On
    one torch thread: tiny models run several times faster so on a shared 2-core machine
    (measured: 12 s against 48 s with 2 threads beside two training jobs)."""
    if "demo" not in _built:
        run = demo_copy(tmp_path_factory.mktemp("report") / "demo")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            start = time.perf_counter()
            report = collect_report(run, progress=False)
            _built["demo"] = (run, report, time.perf_counter() - start)
        finally:
            torch.set_num_threads(threads)
    return _built["demo"]


def half_written(
    where: Path,
    status: str = "finished",
    metrics_rows: int | None = None,
    checkpoints=(),
    cut_line: bool = False,
    truncate: tuple[int, ...] = (),
) -> Path:
    """A run directory as training leaves it part-way: run.json with `status`, the first
    `metrics_rows` rows of metrics.jsonl (None: no file; `cut_line`: plus half a line, as a kill
    leaves it), the checkpoints at `checkpoints` (those in `truncate` cut in half)."""
    where.mkdir(parents=True)
    meta = json.loads((DEMO / "run.json").read_text())
    meta["status"] = status
    if status != "finished":
        meta.pop("final_step", None)
    (where / "run.json").write_text(json.dumps(meta, indent=2))
    if metrics_rows is not None:
        lines = (DEMO / "metrics.jsonl").read_text().splitlines()
        text = "".join(line + "\n" for line in lines[:metrics_rows])
        if cut_line:
            text += lines[metrics_rows][:40]
        (where / "metrics.jsonl").write_text(text)
    if checkpoints:
        (where / "checkpoints").mkdir()
    for step in checkpoints:
        name = f"step_{step:08d}.safetensors"
        data = (DEMO / "checkpoints" / name).read_bytes()
        (where / "checkpoints" / name).write_bytes(
            data[: len(data) // 2] if step in truncate else data
        )
    return where
