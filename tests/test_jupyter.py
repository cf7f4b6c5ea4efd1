"""In a real Jupyter kernel: importing inducthead prints no warning, and a `plot()` returned from a
cell is displayed exactly once (before and after pyplot's inline backend is loaded)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # starts a kernel and imports the package in it (~15 s)

jupyter_client = pytest.importorskip("jupyter_client.manager")


@pytest.fixture(scope="module")
def kernel():
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # the kernel's own backend
    root = Path(__file__).resolve().parent.parent
    km, kc = jupyter_client.start_new_kernel(kernel_name="python3", env=env, cwd=str(root))
    yield kc
    kc.stop_channels()
    km.shutdown_kernel(now=True)


def run_cell(kc, code: str) -> dict[str, list]:
    """Execute `code`; the streams' text and the MIME types of every displayed output."""
    msg_id = kc.execute(code)
    out: dict[str, list] = {"stdout": [], "stderr": [], "images": [], "error": []}
    while True:
        msg = kc.get_iopub_msg(timeout=300)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            out[content["name"]].append(content["text"])
        elif kind in ("display_data", "execute_result"):
            out["images"] += [m for m in content["data"] if m.startswith("image/")]
        elif kind == "error":
            out["error"].append(f"{content['ename']}: {content['evalue']}")
        elif kind == "status" and content["execution_state"] == "idle":
            return out


def test_import_is_silent_and_plots_show_once(kernel):
    out = run_cell(kernel, "import inducthead as ih")
    assert out["error"] == [] and out["stderr"] == []  # no "IProgress not found"
    setup = "from inducthead.model import induction_circuit\nr = ih.detect(induction_circuit()[0])"
    assert run_cell(kernel, setup)["error"] == []
    shown = run_cell(kernel, "r.plot()")  # before any pyplot backend is loaded
    assert shown["error"] == [] and shown["images"] == ["image/png"]
    backend = "import matplotlib.pyplot as plt\nplt.close(plt.figure())"  # loads the inline one
    assert run_cell(kernel, backend)["error"] == []
    shown = run_cell(kernel, "r.plot()")
    assert shown["error"] == [] and shown["images"] == ["image/png"]
    shown = run_cell(kernel, "ih.Run('assets/demo').plot()")
    assert shown["error"] == [] and shown["images"] == ["image/png"]
    assert run_cell(kernel, "print(plt.get_fignums())")["stdout"] == ["[]\n"]
