"""Causal evidence: data and metrics, head ablations and scans, patching, clamps and `verify`."""

from inducthead.causal.ablation import Ablation, ablate
from inducthead.causal.clamp import Clamp, clamp
from inducthead.causal.data import default_data
from inducthead.causal.metrics import METRICS, icl_score, loss_by_position, no_context_baseline
from inducthead.causal.patching import PatchResult, patch_heads, path_patch
from inducthead.causal.scan import AblationResult, ablation_scan
from inducthead.causal.verification import CausalReport, CausalResult, VerifyThresholds
from inducthead.causal.verify import verify

__all__ = [
    "ablate",
    "Ablation",
    "ablation_scan",
    "AblationResult",
    "clamp",
    "Clamp",
    "patch_heads",
    "path_patch",
    "PatchResult",
    "verify",
    "CausalResult",
    "CausalReport",
    "VerifyThresholds",
    "METRICS",
    "default_data",
    "icl_score",
    "loss_by_position",
    "no_context_baseline",
]
