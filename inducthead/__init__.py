"""inducthead: train, find and causally verify induction heads.

Data flows one way: config -> model -> train -> run dir -> detect / dynamics -> verify -> report.
"""

from inducthead import configs, tasks
from inducthead.ablation import AblationResult, ablate, ablation_scan
from inducthead.causal_metrics import icl_score, loss_by_position
from inducthead.clamp import clamp
from inducthead.config import HookedTransformerConfig
from inducthead.detect import DetectionReport, Thresholds, detect
from inducthead.emergence import emergence_step
from inducthead.interop import to_bridge
from inducthead.model import HookedTransformer
from inducthead.multiseed import train_many
from inducthead.patching import patch_heads, path_patch
from inducthead.pickled import load_pickle
from inducthead.pretrained import load_pretrained
from inducthead.rundir import Run, load
from inducthead.train import TrainConfig, train
from inducthead.verify import CausalReport, verify

__version__ = "0.1.0"
__all__ = [
    "HookedTransformerConfig",
    "HookedTransformer",
    "configs",
    "tasks",
    "to_bridge",
    "train",
    "train_many",
    "TrainConfig",
    "load",
    "load_pickle",
    "Run",
    "detect",
    "DetectionReport",
    "Thresholds",
    "load_pretrained",
    "verify",
    "CausalReport",
    "ablate",
    "ablation_scan",
    "AblationResult",
    "icl_score",
    "loss_by_position",
    "patch_heads",
    "path_patch",
    "clamp",
    "emergence_step",
]
