"""Training dynamics: a run's checkpoints as one `Trajectory`, analysed in a stream.

Head scores, losses, the ICL score and loss by position at every checkpoint (cached under the
run directory by checkpoint content hash), the phase-change window, emergence steps, weight PCA,
Olsson's per-token-loss PCA, Hoogland's essential dynamics and the local learning coefficient,
Musat's progress measures (provisional), and the stage signals side by side.

Layering: above `causal` and `analysis` (it runs their scores on each checkpoint) and `runs` (it
reads run directories); a sibling of `training`: neither imports the other, and nothing here
imports `sweep` or `cli`.
"""

from inducthead.dynamics.checkpoints import CheckpointRef
from inducthead.dynamics.compare import Comparison
from inducthead.dynamics.llc import LLCSettings, MissingExtraError, estimate_llc
from inducthead.dynamics.results import (
    EmergenceResult,
    HeadScoresResult,
    LossByPositionResult,
    PhaseChangeResult,
    StagesResult,
    TrajectoryResult,
)
from inducthead.dynamics.results_pca import (
    EssentialDynamicsResult,
    LLCResult,
    PCAResult,
    ProgressMeasuresResult,
    WeightPCAResult,
)
from inducthead.dynamics.trajectory import Trajectory
from inducthead.runs.checkpoint import read_model_state  # what a trajectory reads with

__all__ = [
    "Trajectory",
    "Comparison",
    "CheckpointRef",
    "read_model_state",
    "LLCSettings",
    "estimate_llc",
    "MissingExtraError",
    "TrajectoryResult",
    "HeadScoresResult",
    "PhaseChangeResult",
    "LossByPositionResult",
    "EmergenceResult",
    "StagesResult",
    "PCAResult",
    "EssentialDynamicsResult",
    "WeightPCAResult",
    "LLCResult",
    "ProgressMeasuresResult",
]
