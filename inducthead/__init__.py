"""inducthead: train, find and causally verify induction heads.

Data flows one way, and the subpackages follow it (README, "Architecture"):
config (`model`, `recipe`, `tasks`, `presets`) -> model -> `training` -> run dir (`runs`) ->
`analysis` (detect) -> `causal` (verify); `dynamics` reads checkpoints over time and `viz` draws
attention views offline; `papers` and `report` build on all of them; `sweep` and `cli` sit on top.
"""

from inducthead import (
    _progress,  # noqa: F401  (first: no tqdm "IProgress not found" in Jupyter)
    dynamics,
    presets,
    tasks,
    viz,
)
from inducthead._version import __version__
from inducthead.analysis import (
    DetectionReport,
    DetectionResult,
    Head,
    Thresholds,
    detect,
    emergence_step,
    induction_score,
)
from inducthead.causal import (
    AblationResult,
    CausalReport,
    CausalResult,
    PatchResult,
    ablate,
    ablation_scan,
    clamp,
    icl_score,
    loss_by_position,
    patch_heads,
    path_patch,
    verify,
)
from inducthead.dynamics import Trajectory
from inducthead.model import HookedTransformer, HookedTransformerConfig, to_bridge
from inducthead.recipe import TrainConfig
from inducthead.runs import Run, load, load_pickle, load_pretrained
from inducthead.training import train, train_many

configs = presets  # the name earlier versions used for the preset registry

__all__ = [
    "__version__",
    "HookedTransformerConfig",
    "HookedTransformer",
    "presets",
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
    "DetectionResult",
    "DetectionReport",
    "Head",
    "induction_score",
    "Thresholds",
    "load_pretrained",
    "verify",
    "CausalResult",
    "CausalReport",
    "PatchResult",
    "ablate",
    "ablation_scan",
    "AblationResult",
    "icl_score",
    "loss_by_position",
    "patch_heads",
    "path_patch",
    "clamp",
    "emergence_step",
    "dynamics",
    "Trajectory",
    "viz",
]
