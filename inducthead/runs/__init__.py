"""Run directories and model files: the checkpoint format, `Run` (what users read), `RunWriter`
(what the training loop writes through), the lock, safe paths, and loading pretrained models and
TransformerLens 3 pickles."""

from inducthead.runs.checkpoint import CheckpointError
from inducthead.runs.paths import UnsafePathError, safe_child, sanitize_name
from inducthead.runs.pickled import load_pickle
from inducthead.runs.pretrained import PretrainedLoadError, load_pretrained
from inducthead.runs.run import Run, RunDirError, load, load_checkpoint
from inducthead.runs.writer import RunWriter

__all__ = [
    "Run",
    "RunWriter",
    "RunDirError",
    "CheckpointError",
    "load",
    "load_checkpoint",
    "load_pickle",
    "load_pretrained",
    "PretrainedLoadError",
    "safe_child",
    "sanitize_name",
    "UnsafePathError",
]
