"""Shared by the benchmark scripts: machine description and RESULTS.md rows."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine() -> str:
    """CPU or GPU model, core count, torch and TransformerLens versions."""
    from importlib.metadata import version

    if torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    else:
        cpu = platform.processor() or platform.machine()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        device = f"{cpu}, {os.cpu_count()} cores"
    return f"{device}; torch {torch.__version__}; transformer-lens {version('transformer-lens')}"


def record(section: str, lines: list[str]) -> None:
    """Append a dated block of result lines under `## section` in benchmarks/RESULTS.md."""
    stamp = datetime.date.today().isoformat()
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    block = f"\n### {section} — {stamp}\n_{machine()}_\n\n" + "\n".join(lines) + "\n"
    RESULTS.write_text(text.rstrip("\n") + "\n" + block)
    print(block)


def emit(section: str, lines: list[str], save: bool) -> None:
    """Record `lines` under `section` in RESULTS.md when `save`, else only print them (--smoke,
    --no-record)."""
    if save:
        record(section, lines)
    else:
        print("\n".join(lines))
