"""Progress bars (`inducthead._progress`): the notebook bar only where ipywidgets exists, and no
tqdm "IProgress not found" warning in a Jupyter kernel without it."""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types
import warnings

import pytest
import tqdm
import tqdm.notebook
import tqdm.std

from inducthead import _progress

TQDM_AUTO = ("tqdm.auto", "tqdm.autonotebook")


class ZMQInteractiveShell:  # the kernel's shell, by the name tqdm.autonotebook reads
    config = {"IPKernelApp": {}}


@pytest.fixture
def kernel(monkeypatch):
    """A simulated Jupyter kernel, tqdm.auto not imported yet; `kernel(widgets)` sets whether
    ipywidgets is importable. Everything is restored afterwards, `_progress` reloaded."""
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = ZMQInteractiveShell
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    # tqdm.autonotebook's test for "a Jupyter kernel" (tqdm 4.67+; older ones read config)
    monkeypatch.setitem(sys.modules, "ipykernel.zmqshell", types.ModuleType("ipykernel.zmqshell"))
    monkeypatch.delitem(sys.modules, "IPython.utils._process_emscripten", raising=False)
    for name in TQDM_AUTO:
        monkeypatch.delitem(sys.modules, name, raising=False)
        monkeypatch.setattr(tqdm, name.split(".")[1], None, raising=False)

    def setup(widgets: bool):
        if widgets:  # enough of ipywidgets for tqdm.notebook
            fake = types.ModuleType("ipywidgets")
            fake.__spec__ = importlib.machinery.ModuleSpec("ipywidgets", None)
            fake.FloatProgress = fake.HBox = fake.HTML = object
            monkeypatch.setitem(sys.modules, "ipywidgets", fake)
            monkeypatch.setattr(tqdm.notebook, "IProgress", object)
        else:
            monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import raises ImportError
            monkeypatch.setattr(tqdm.notebook, "IProgress", None)

    yield setup
    monkeypatch.undo()
    importlib.reload(_progress)


def _tqdm_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, tqdm.TqdmWarning)]


def test_plain_tqdm_auto_warns_in_a_kernel_without_ipywidgets(kernel):
    """The control: the simulated kernel reproduces the warning users saw."""
    kernel(widgets=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        importlib.import_module("tqdm.auto")
    assert any("IProgress not found" in m for m in _tqdm_warnings(caught))


def test_no_warning_without_ipywidgets_and_the_text_bar(kernel):
    kernel(widgets=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        importlib.reload(_progress)
        importlib.import_module("tqdm.auto")  # as huggingface_hub does later: cached, silent
    assert _tqdm_warnings(caught) == []
    assert _progress.tqdm is tqdm.std.tqdm
    with _progress.progress_bar(range(3), disable=True) as bar:
        assert isinstance(bar, tqdm.std.tqdm) and list(bar) == [0, 1, 2]


def test_the_notebook_bar_where_ipywidgets_exists(kernel):
    kernel(widgets=True)
    importlib.reload(_progress)
    assert _progress.has_widgets()
    assert issubclass(_progress.tqdm, tqdm.notebook.tqdm)  # tqdm.auto's notebook bar


def test_no_kernel_no_ipywidgets_text_bar(monkeypatch):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    assert not _progress.has_widgets()
    importlib.reload(_progress)
    assert _progress.tqdm is tqdm.std.tqdm
    monkeypatch.undo()
    importlib.reload(_progress)
