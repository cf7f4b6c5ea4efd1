"""Progress bars: tqdm's notebook widget where ipywidgets is installed, its text bar elsewhere,
and never tqdm's "IProgress not found" warning.

In a Jupyter kernel without ipywidgets, importing `tqdm.auto` warns and then falls back to the
text bar. We import it once here with that warning silenced, before anything else in the
package loads: `tqdm.auto` is then cached, so libraries that import it later (huggingface_hub,
datasets) get the same fallback without a warning. `inducthead/__init__.py` imports this module
first.
"""

from __future__ import annotations

import importlib.util
import warnings

from tqdm import TqdmWarning


def has_widgets() -> bool:
    """Whether ipywidgets (tqdm's notebook bar) can be imported."""
    try:
        return importlib.util.find_spec("ipywidgets") is not None
    except (ImportError, ValueError):  # a broken or stubbed-out module
        return False


if has_widgets():
    from tqdm.auto import tqdm
else:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "IProgress not found", TqdmWarning)
        importlib.import_module("tqdm.auto")  # cached now: later imports of it do not warn
    from tqdm.std import tqdm


def progress_bar(iterable=None, **kwargs):
    """A tqdm bar over `iterable` (or one to `update` by hand: `total=`); keywords as tqdm's
    (desc, total, disable, unit, leave, ...). (Not named `progress`: that is the on/off flag of
    the functions that draw bars.)"""
    return tqdm(iterable, **kwargs)
