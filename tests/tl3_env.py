"""Create `.venv-tl3`, the reference environment of tests/test_tl3_differential.py: the CPU build of
torch and TransformerLens 3.9 (whose HookedTransformer our model follows), apart from our `.venv`
(which has TransformerLens 4, which removed it). `make tl3-venv` runs this; so does the test
module when the venv is missing.

    python tests/tl3_env.py [--venv DIR]     # default: $TL3_VENV, else .venv-tl3

Reuses a venv whose stamp names the same specs, else builds it anew (about 1.5 min and 1.6 GB:
torch is most of both; the full dependency set of transformer-lens, as its users have it).
Torch comes from $WHEELS (/opt/wheels) when that folder exists. Exit status: 0 ready (the
venv's python is the last line printed); 3 the package registry cannot be reached (one line
saying so: the differential tests skip with it); 1 anything else (a real failure: pip's output
is printed).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TORCH_SPEC = os.environ.get("TL3_TORCH_SPEC", "torch==2.13.0")  # the CPU wheel lies on disk
TL3_SPEC = "transformer-lens==3.9.0"
WHEELS = Path(os.environ.get("WHEELS", "/opt/wheels"))
UNREACHABLE = 3
# What pip prints when it cannot talk to the index (no host named: pip's own configuration).
_NETWORK_ERRORS = (
    "from versions: none",
    "NewConnectionError",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "ConnectTimeout",
    "ConnectionError",
    "ProxyError",
    "Read timed out",
)


def default_venv() -> Path:
    return Path(os.environ.get("TL3_VENV", ROOT / ".venv-tl3"))


def python_of(venv: Path) -> Path:
    return venv / "bin" / "python"


def stamp_text() -> str:
    return f"{TORCH_SPEC} {TL3_SPEC}\n"


def is_ready(venv: Path) -> bool:
    stamp = venv / ".installed"
    return python_of(venv).exists() and stamp.is_file() and stamp.read_text() == stamp_text()


def _pip(venv: Path, *args: str) -> subprocess.CompletedProcess:
    links = ["--find-links", str(WHEELS)] if WHEELS.is_dir() else []
    cmd = [str(python_of(venv)), "-m", "pip", *args[:1], *links, *args[1:]]
    return subprocess.run(cmd, capture_output=True, text=True)


def ensure(venv: Path) -> int:
    if is_ready(venv):
        print(python_of(venv))
        return 0
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    with tempfile.TemporaryDirectory() as tmp:  # can the registry be reached at all?
        probe = _pip(
            venv,
            "download",
            "--no-deps",
            "--retries",
            "0",
            "--timeout",
            "30",
            "-q",
            "-d",
            tmp,
            TL3_SPEC,
        )
    if probe.returncode:
        out = probe.stdout + probe.stderr
        shutil.rmtree(venv, ignore_errors=True)
        if any(s in out for s in _NETWORK_ERRORS):
            print(f"the package registry cannot be reached to install {TL3_SPEC} into {venv}")
            return UNREACHABLE
        print(out, file=sys.stderr)
        return 1
    # torch first, from the local wheel: an unpinned torch would pull a multi-GB CUDA build.
    for specs in ([TORCH_SPEC], [TORCH_SPEC, TL3_SPEC]):  # and keep that torch
        done = _pip(venv, "install", "-q", *specs)
        if done.returncode:
            print(done.stdout + done.stderr, file=sys.stderr)
            shutil.rmtree(venv, ignore_errors=True)
            return 1
    (venv / ".installed").write_text(stamp_text())
    print(python_of(venv))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=default_venv())
    return ensure(parser.parse_args().venv.resolve())


if __name__ == "__main__":
    sys.exit(main())
