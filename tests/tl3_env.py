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


def _pip(python: Path | str, *args: str) -> subprocess.CompletedProcess:
    links = ["--find-links", str(WHEELS)] if WHEELS.is_dir() else []
    cmd = [str(python), "-m", "pip", *args[:1], *links, *args[1:]]
    return subprocess.run(cmd, capture_output=True, text=True)


def probe(python: Path | str) -> str | None:
    """None if `python`'s pip can fetch transformer-lens from the registry; else why not: the
    one line the differential tests skip with, or RuntimeError with pip's output when the
    registry answered with something else than a network failure."""
    with tempfile.TemporaryDirectory() as tmp:
        args = ("--no-deps", "--retries", "0", "--timeout", "30", "-q", "-d", tmp, TL3_SPEC)
        done = _pip(python, "download", *args)
    if done.returncode == 0:
        return None
    out = done.stdout + done.stderr
    if any(s in out for s in _NETWORK_ERRORS):
        return f"the package registry cannot be reached to install {TL3_SPEC}"
    raise RuntimeError(out)


def unavailable(venv: Path) -> str | None:
    """Why `venv` cannot be made here (no registry), or None: it is ready or can be built. Cheap
    when it is ready; otherwise one pip download, with a throwaway venv if this Python has no
    pip (uv-made venvs)."""
    if is_ready(venv):
        return None
    if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode:
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, "-m", "venv", tmp], check=True)
            return probe(python_of(Path(tmp)))
    return probe(sys.executable)


def ensure(venv: Path) -> int:
    if is_ready(venv):
        print(python_of(venv))
        return 0
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    try:
        why = probe(python_of(venv))  # can the registry be reached at all?
    except RuntimeError as e:
        print(e, file=sys.stderr)
        shutil.rmtree(venv, ignore_errors=True)
        return 1
    if why:
        shutil.rmtree(venv, ignore_errors=True)
        print(f"{why} into {venv}")
        return UNREACHABLE
    # torch first, from the local wheel: an unpinned torch would pull a multi-GB CUDA build.
    for specs in ([TORCH_SPEC], [TORCH_SPEC, TL3_SPEC]):  # and keep that torch
        done = _pip(python_of(venv), "install", "-q", *specs)
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
